//! The command line: global options and one subcommand per job.

use clap::{Args, Parser, Subcommand};

/// Operator tool of an es-rs application: the event log, projections, dead
/// letters and Kafka publishing of one event store schema.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// PostgreSQL URL of the event store (never printed).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Schema of the event store.
    #[arg(long, env = "DATABASE_SCHEMA", global = true)]
    pub schema: Option<String>,
    /// Seconds to wait for a database connection (1 to 3600).
    #[arg(long, default_value_t = 5, value_name = "SECS", global = true,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub connect_timeout: u64,
    /// Machine-readable output: one JSON document per command on stdout
    /// (`tail --follow`: one JSON document per event and line).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Prints the events of one stream.
    Stream(StreamArgs),
    /// Prints the last events of the global log; `--follow` keeps printing
    /// new ones until interrupted.
    Tail(TailArgs),
    /// Lists projections: checkpoint, lag (events and seconds), dead
    /// letters and state.
    Projections,
    /// Replays one projection: in full (the read model is reset), from a
    /// position, or only selected event types; shows progress on stderr.
    #[command(visible_alias = "replay")]
    Rebuild(RebuildArgs),
    /// Lists, retries or skips the events a projection set aside.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Shows the Kafka publishing backlog: pending and parked outbox rows,
    /// and the replication slot's lag.
    Publishing(PublishingArgs),
    /// Releases a parked outbox row once the cause of its failures is
    /// fixed: it is published again, and so are the rows of its stream
    /// held behind it.
    Unpark {
        /// The parked row's global position (as `publishing` lists it).
        position: u64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    /// The stream id.
    pub stream_id: String,
    /// First version to print.
    #[arg(long, default_value_t = 1, value_name = "VERSION")]
    pub from_version: u64,
    /// Most events to print.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// How many of the last events to print.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub last: usize,
    /// Keep printing new events until interrupted (Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RebuildArgs {
    /// The projection (`projections` lists them); the name of a blue/green
    /// projection (`accounts`) stands for its active version.
    pub projection: String,
    /// Replay from this global position: the checkpoint moves back to it
    /// and everything after it is applied again (without `--event-type`);
    /// with `--event-type`, where the selective replay starts.
    #[arg(long, value_name = "POSITION")]
    pub from: Option<u64>,
    /// Apply again only events of this type, up to the current checkpoint,
    /// without moving it (repeatable).
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// Events per page (one transaction each); the projection's own
    /// setting by default.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_size: Option<u64>,
    /// Replay even if readers are served from this projection (the active
    /// version of a blue/green pair): they see it empty or behind until it
    /// has caught up.
    #[arg(long)]
    pub serving: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadLetterCommand {
    /// Lists the dead letters of one projection, or of every registered one.
    List {
        /// The projection (all registered ones when omitted).
        projection: Option<String>,
    },
    /// Applies dead-lettered events again and removes their letters.
    Retry {
        /// The projection.
        projection: String,
        /// The dead letter's global position.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        position: Option<u64>,
        /// Every dead letter of the projection, oldest first.
        #[arg(long)]
        all: bool,
    },
    /// Removes a dead letter without applying its event.
    Skip {
        /// The projection.
        projection: String,
        /// The dead letter's global position.
        #[arg(long)]
        position: u64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PublishingArgs {
    /// Replication slot of the built-in CDC relay; default
    /// `es_{database}_{schema}` (es-kafka's default slot name).
    #[arg(long, env = "CDC_SLOT_NAME")]
    pub slot: Option<String>,
}
