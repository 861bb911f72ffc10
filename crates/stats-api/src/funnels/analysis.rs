//! The funnel computation, free of I/O: each user's walk through the steps and the per-step
//! figures over every user.
//!
//! Analysis is per user: each user's earliest step-1 event inside the range is their entry;
//! every later step must follow within `window_seconds` of that entry. In `ordered` mode other
//! events may happen between steps; in `strict` mode each step must be the user's very next
//! event. Events are ordered by event time, then by arrival (row id).

use std::collections::HashMap;

use serde::Serialize;

use super::spec::OrderMode;

/// The steps (0-based, at most 32) one event matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepSet(u32);

impl StepSet {
    pub fn insert(&mut self, step: usize) {
        self.0 |= 1 << step;
    }

    pub fn contains(self, step: usize) -> bool {
        self.0 & (1 << step) != 0
    }
}

/// One user's event, reduced to what the analysis needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub time_ms: i64,
    pub id: u64,
    pub steps: StepSet,
}

/// How far each user got, and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    pub users: u64,
    pub conversion_from_first: f64,
    pub conversion_from_previous: f64,
    pub drop_off: u64,
    pub median_seconds_from_previous: Option<f64>,
    pub median_seconds_from_first: Option<f64>,
}

/// The bounds of an analysis: entries in `[entry_from, entry_to)`, later steps at most
/// `window_ms` after the entry and before `horizon_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub entry_from: i64,
    pub entry_to: i64,
    pub window_ms: Option<i64>,
    pub horizon_ms: i64,
}

/// For one user's hits sorted by (time, id): the times at which each reached step was done.
pub fn walk(hits: &[Hit], n_steps: usize, mode: OrderMode, bounds: Bounds) -> Vec<i64> {
    let Some(entry) = hits.iter().position(|h| {
        h.steps.contains(0) && h.time_ms >= bounds.entry_from && h.time_ms < bounds.entry_to
    }) else {
        return Vec::new();
    };
    let start = hits[entry].time_ms;
    // Exclusive: a step exactly `window` after the entry still counts.
    let deadline = bounds.window_ms.map_or(bounds.horizon_ms, |w| {
        (start + w + 1).min(bounds.horizon_ms)
    });
    let mut times = vec![start];
    let mut at = entry;
    for step in 1..n_steps {
        let next = match mode {
            OrderMode::Ordered => hits
                .iter()
                .enumerate()
                .skip(at + 1)
                .take_while(|(_, h)| h.time_ms < deadline)
                .find(|(_, h)| h.steps.contains(step))
                .map(|(i, _)| i),
            OrderMode::Strict => hits
                .get(at + 1)
                .filter(|h| h.steps.contains(step) && h.time_ms < deadline)
                .map(|_| at + 1),
        };
        match next {
            Some(i) => {
                at = i;
                times.push(hits[i].time_ms);
            }
            None => break,
        }
    }
    times
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Per-step figures over every user's walk.
pub fn summarize(
    users: HashMap<String, Vec<Hit>>,
    n_steps: usize,
    mode: OrderMode,
    bounds: Bounds,
) -> Vec<StepResult> {
    let mut reached = vec![0u64; n_steps];
    let mut from_previous: Vec<Vec<f64>> = vec![Vec::new(); n_steps];
    let mut from_first: Vec<Vec<f64>> = vec![Vec::new(); n_steps];
    for (_, mut hits) in users {
        hits.sort_unstable();
        let times = walk(&hits, n_steps, mode, bounds);
        for (step, t) in times.iter().enumerate() {
            reached[step] += 1;
            if step > 0 {
                from_previous[step].push((t - times[step - 1]) as f64 / 1000.0);
                from_first[step].push((t - times[0]) as f64 / 1000.0);
            }
        }
    }
    (0..n_steps)
        .map(|step| {
            let previous = if step == 0 {
                reached[0]
            } else {
                reached[step - 1]
            };
            StepResult {
                users: reached[step],
                conversion_from_first: ratio(reached[step], reached[0]),
                conversion_from_previous: ratio(reached[step], previous),
                drop_off: previous - reached[step],
                median_seconds_from_previous: median(&mut from_previous[step]),
                median_seconds_from_first: median(&mut from_first[step]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hit matching the steps whose bits `mask` sets.
    fn hit(time_ms: i64, mask: u32) -> Hit {
        Hit {
            time_ms,
            id: time_ms as u64,
            steps: StepSet(mask),
        }
    }

    const OPEN: Bounds = Bounds {
        entry_from: 0,
        entry_to: 1_000,
        window_ms: Some(100),
        horizon_ms: 10_000,
    };

    #[test]
    fn ordered_mode_allows_other_events_between_steps() {
        let hits = [hit(10, 1), hit(20, 0), hit(30, 2), hit(40, 4)];
        assert_eq!(walk(&hits, 3, OrderMode::Ordered, OPEN), vec![10, 30, 40]);
        assert_eq!(walk(&hits, 3, OrderMode::Strict, OPEN), vec![10]);
    }

    #[test]
    fn the_window_counts_from_the_earliest_entry() {
        let hits = [hit(10, 1), hit(50, 1), hit(120, 2)];
        assert_eq!(walk(&hits, 2, OrderMode::Ordered, OPEN), vec![10]);
        let hits = [hit(10, 1), hit(110, 2)];
        assert_eq!(walk(&hits, 2, OrderMode::Ordered, OPEN), vec![10, 110]);
    }

    #[test]
    fn entries_outside_the_range_do_not_count() {
        let hits = [hit(1_500, 1), hit(1_510, 2)];
        assert!(walk(&hits, 2, OrderMode::Ordered, OPEN).is_empty());
    }

    #[test]
    fn summary_gives_conversion_drop_off_and_medians() {
        let users = HashMap::from([
            ("a".to_owned(), vec![hit(0, 1), hit(10_000, 2)]),
            ("b".to_owned(), vec![hit(0, 1), hit(30_000, 2)]),
            ("c".to_owned(), vec![hit(0, 1)]),
            ("d".to_owned(), vec![hit(5, 2)]),
        ]);
        let bounds = Bounds {
            entry_from: 0,
            entry_to: 100,
            window_ms: None,
            horizon_ms: 100_000,
        };
        let r = summarize(users, 2, OrderMode::Ordered, bounds);
        assert_eq!(r[0].users, 3);
        assert_eq!(r[1].users, 2);
        assert_eq!(r[1].drop_off, 1);
        assert!((r[1].conversion_from_first - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r[1].median_seconds_from_previous, Some(20.0));
    }
}
