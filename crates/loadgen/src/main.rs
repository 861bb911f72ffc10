//! `loadgen`: synthetic traffic for InsightFlow and the raw baselines `make bench` compares the
//! pipeline against. Every command prints one JSON object per measurement on stdout (and
//! appends it to `--out` when given), tagged with `--tag key=value` pairs.

mod admin;
mod events;
mod http_load;
mod measure;
mod parse_cost;
mod produce;
mod report;
mod stats_load;
mod stores;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "InsightFlow load generator and benchmark baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// POST realistic event batches to the gateway: closed loop (saturation) or fixed rate.
    Http(http_load::HttpArgs),
    /// Raw rdkafka producer with the gateway's producer settings: saturation or topic pre-fill.
    Produce(produce::ProduceArgs),
    /// Raw stores: the same rows and Redis commands, written directly (no Kafka, no worker).
    Stores(stores::StoresArgs),
    /// Stats API endpoints at a fixed request rate, against `/health` as the floor.
    Stats(stats_load::StatsArgs),
    /// Freshness: steady load, then time from the gateway's 2xx to visibility in the stats API.
    Freshness(stats_load::FreshnessArgs),
    /// Wait until the worker has applied N events; report drain rate and per-event cost.
    DrainWait(admin::DrainWaitArgs),
    /// Count what the stores and the topic hold; fail unless it matches what was acknowledged.
    Check(admin::CheckArgs),
    /// Create or delete a topic.
    Topic(admin::TopicArgs),
    /// Aggregate a results file into medians and ratios: JSON and a Markdown table.
    Report(report::ReportArgs),
    /// The gateway's per-event parse, validation and serialization, for callgrind.
    ParseCost(parse_cost::ParseCostArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::ParseCost(args) = &cli.command {
        return parse_cost::run(args);
    }
    if let Command::Report(args) = cli.command {
        return report::run(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Http(args) => http_load::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Stores(args) => stores::run(args).await,
            Command::Stats(args) => stats_load::run_stats(args).await,
            Command::Freshness(args) => stats_load::run_freshness(args).await,
            Command::DrainWait(args) => admin::drain_wait(args).await,
            Command::Check(args) => admin::check(args).await,
            Command::Topic(args) => admin::topic(args).await,
            Command::Report(_) | Command::ParseCost(_) => unreachable!("handled above"),
        }
    })
}
