//! `loadgen parse-cost`: the gateway's per-event work outside the network, for an instruction
//! count under callgrind: read the body, validate and enrich every event, serialize each one
//! as its Kafka payload. Generation runs first and is left out by toggling collection on
//! [`gateway_work`]:
//!
//! ```sh
//! valgrind --tool=callgrind --toggle-collect='*gateway_work*' \
//!     target/release/loadgen parse-cost --batches 100 --batch-size 50
//! ```

use chrono::Utc;
use clap::Args;
use insightflow_model::{PayloadWriter, ProjectId};

use crate::events::{validated_events, EventGenerator};

#[derive(Args)]
pub struct ParseCostArgs {
    #[arg(long, default_value_t = 100)]
    pub batches: usize,
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(args: &ParseCostArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let mut generator = EventGenerator::new(args.seed, 20_000, true);
    let bodies: Vec<Vec<u8>> = (0..args.batches)
        .map(|_| generator.batch_body(args.batch_size, now))
        .collect();
    let project = ProjectId::parse("default").map_err(|e| anyhow::anyhow!("{}", e.reason))?;
    let (events, bytes) = gateway_work(&bodies, &project)?;
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "{}",
        serde_json::json!({
            "phase": "parse-cost", "events": events, "body_bytes": body_bytes,
            "payload_bytes": bytes,
        })
    );
    Ok(())
}

/// What the gateway does per request between reading the body and handing payloads to
/// librdkafka. Not inlined, so callgrind can count it alone.
#[inline(never)]
fn gateway_work(bodies: &[Vec<u8>], project: &ProjectId) -> anyhow::Result<(usize, usize)> {
    let now = Utc::now();
    let (mut events, mut bytes) = (0, 0);
    let mut payload = Vec::with_capacity(1024);
    for body in bodies {
        // As the gateway's producer: one writer per request, one reused payload buffer.
        let mut writer = PayloadWriter::new();
        for event in validated_events(body, project, now)? {
            payload.clear();
            writer.write(&event, &mut payload);
            bytes += payload.len();
            events += 1;
        }
    }
    Ok((events, bytes))
}
