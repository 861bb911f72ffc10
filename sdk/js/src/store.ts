/**
 * localStorage / sessionStorage behind a wrapper that never throws: storage can be missing
 * (privacy modes, sandboxed iframes), full, or disabled by the user. Without it the SDK keeps
 * working from memory, it only loses what a reload would have kept.
 */
export interface KV {
  get(key: string): string | null;
  set(key: string, value: string): boolean;
  del(key: string): void;
  keys(): string[];
}

export function kv(storage: Storage | null | undefined): KV {
  const memory = new Map<string, string>();
  const s = storage;
  const use = <T>(real: (s: Storage) => T, fallback: () => T): T => {
    try {
      if (s) return real(s);
    } catch {
      /* storage refused: fall through */
    }
    return fallback();
  };
  return {
    get: (k) => use((s) => s.getItem(k), () => memory.get(k) ?? null),
    set: (k, v) =>
      use(
        (s) => (s.setItem(k, v), true),
        // No storage at all: keep it in memory. Storage that refused (full): report it.
        () => !s && (memory.set(k, v), true),
      ),
    del: (k) => use((s) => s.removeItem(k), () => void memory.delete(k)),
    keys: () =>
      use(
        (s) => {
          const out: string[] = [];
          for (let i = 0; i < s.length; i++) {
            const k = s.key(i);
            if (k !== null) out.push(k);
          }
          return out;
        },
        () => [...memory.keys()],
      ),
  };
}

export function readJSON<T>(store: KV, key: string): T | null {
  const raw = store.get(key);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return null;
  }
}
