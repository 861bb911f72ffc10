//! Dashboards served from memory while a newer one is computed (stale-while-revalidate).
//!
//! One entry per distinct dashboard (project and parsed parameters). An entry younger than the
//! cache period is served as is. An older one is still served, at once, while one background
//! computation replaces it; only an entry older than `max_stale` (or none) makes a request
//! wait, and then for the computation already under way if there is one. So there is at most
//! one computation per distinct dashboard at a time, requests never queue behind MySQL once a
//! dashboard has been computed, and an answer is at most `max_stale` old: its `generated_at`
//! and `as_of` say exactly how old.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::error::ApiError;

type Outcome<V> = Result<Arc<V>, Arc<ApiError>>;

struct Entry<V> {
    latest: Option<(Arc<V>, Instant)>,
    computing: Option<Shared<BoxFuture<'static, Outcome<V>>>>,
}

pub struct RefreshingCache<V> {
    period: Duration,
    max_stale: Duration,
    capacity: usize,
    entries: Mutex<HashMap<(String, String), Entry<V>>>,
}

impl<V: Send + Sync + 'static> RefreshingCache<V> {
    /// `period` zero turns the cache off: every request computes.
    pub fn new(period: Duration, max_stale: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            period,
            max_stale: max_stale.max(period),
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_off(&self) -> bool {
        self.period.is_zero()
    }

    /// The dashboard `key` names: from memory when young enough, else from `compute` (run
    /// as a task of its own, so it finishes and is kept even if every request waiting for it
    /// leaves).
    pub async fn get<F>(
        self: &Arc<Self>,
        key: (String, String),
        compute: impl FnOnce() -> F,
    ) -> Result<Arc<V>, ApiError>
    where
        F: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        let now = Instant::now();
        let waiting = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if !entries.contains_key(&key) && entries.len() >= self.capacity {
                evict_oldest(&mut entries);
            }
            let entry = entries.entry(key.clone()).or_insert(Entry {
                latest: None,
                computing: None,
            });
            let age = entry.latest.as_ref().map(|(_, at)| now.duration_since(*at));
            match (&entry.latest, age) {
                (Some((value, _)), Some(age)) if age < self.period => return Ok(value.clone()),
                (Some((value, _)), Some(age)) if age < self.max_stale => {
                    if entry.computing.is_none() {
                        entry.computing = Some(self.start(key, compute()));
                    }
                    return Ok(value.clone());
                }
                _ => entry
                    .computing
                    .get_or_insert_with(|| self.start(key, compute()))
                    .clone(),
            }
        };
        waiting.await.map_err(ApiError::Shared)
    }

    /// Spawns the computation; when it ends, its answer (if any) becomes the entry's latest.
    fn start<F>(
        self: &Arc<Self>,
        key: (String, String),
        work: F,
    ) -> Shared<BoxFuture<'static, Outcome<V>>>
    where
        F: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        let cache = self.clone();
        let task = tokio::spawn(async move {
            let outcome = work.await.map(Arc::new).map_err(Arc::new);
            let mut entries = cache.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = entries.get_mut(&key) {
                entry.computing = None;
                if let Ok(value) = &outcome {
                    entry.latest = Some((value.clone(), Instant::now()));
                }
            }
            outcome
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(ApiError::Unavailable(anyhow::anyhow!(
                    "a dashboard computation panicked: {e}"
                ))))
            })
        }
        .boxed()
        .shared()
    }
}

/// Drops the entry computed longest ago that is not being computed.
fn evict_oldest<V>(entries: &mut HashMap<(String, String), Entry<V>>) {
    let oldest = entries
        .iter()
        .filter(|(_, e)| e.computing.is_none())
        .min_by_key(|(_, e)| e.latest.as_ref().map(|(_, at)| *at))
        .map(|(k, _)| k.clone());
    if let Some(key) = oldest {
        entries.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn key() -> (String, String) {
        ("shop".to_owned(), "tz=UTC".to_owned())
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_computation() {
        let cache = RefreshingCache::new(Duration::from_secs(60), Duration::from_secs(60), 8);
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..20).map(|_| {
            let runs = runs.clone();
            let cache = cache.clone();
            async move {
                cache
                    .get(key(), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }
        });
        for answer in futures::future::join_all(calls).await {
            assert_eq!(*answer.unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_stale_answer_is_served_at_once_while_one_refresh_runs() {
        let cache = RefreshingCache::new(Duration::from_millis(20), Duration::from_secs(60), 8);
        assert_eq!(*cache.get(key(), || async { Ok(1) }).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let runs = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let runs = runs.clone();
            // Stale: the old answer now, the refresh in the background (slow on purpose).
            let answer = cache
                .get(key(), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(2)
                })
                .await
                .unwrap();
            assert_eq!(*answer, 1);
        }
        // Let the background task start (this test's runtime has one thread).
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one refresh at a time");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(*cache.get(key(), || async { Ok(3) }).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn too_old_an_answer_is_not_served_and_errors_are_not_kept() {
        let cache = RefreshingCache::new(Duration::from_millis(10), Duration::from_millis(30), 8);
        assert_eq!(*cache.get(key(), || async { Ok(1) }).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let failed = cache
            .get(key(), || async { Err(ApiError::bad("tz", "no")) })
            .await;
        assert!(
            failed.is_err(),
            "past max_stale the request waits for the computation"
        );
        assert_eq!(*cache.get(key(), || async { Ok(4) }).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn the_oldest_entry_is_evicted_past_capacity() {
        let cache = RefreshingCache::new(Duration::from_secs(60), Duration::from_secs(60), 2);
        for n in 0..3 {
            let key = ("p".to_owned(), n.to_string());
            cache.get(key, || async move { Ok(n) }).await.unwrap();
        }
        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.len(), 2);
        assert!(!entries.contains_key(&("p".to_owned(), "0".to_owned())));
    }
}
