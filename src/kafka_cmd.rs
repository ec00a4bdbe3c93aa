//! `tickflow produce` and `tickflow topics`: load ticks into a topic, create and read topics.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tickflow_connectors::kafka::{self, LineProducer};

/// Default brokers: `TICKFLOW_KAFKA_BROKERS`, else the development broker.
const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// `tickflow produce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// JSON-lines file to load, one record per line (`-` for standard input).
    pub file: PathBuf,
    /// The topic to write.
    #[arg(long)]
    pub topic: String,
    /// Bootstrap brokers.
    #[arg(long, env = "TICKFLOW_KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,
    /// Record field whose value is the message key (and so picks the partition); `""` for
    /// no key (round robin).
    #[arg(long, default_value = "symbol")]
    pub key: String,
    /// Create the topic with this many partitions if it does not exist.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Records per second (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

/// `tickflow topics ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// Create a topic (an existing one is left as it is).
    Create {
        /// The topic.
        topic: String,
        /// Partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Bootstrap brokers.
        #[arg(long, env = "TICKFLOW_KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Print every record of a topic, from the start to its current end, one value per line
    /// (with `--json`, partition, offset, key, value and headers).
    Read {
        /// The topic.
        topic: String,
        /// Bootstrap brokers.
        #[arg(long, env = "TICKFLOW_KAFKA_BROKERS", default_value = DEFAULT_BROKERS)]
        brokers: String,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
    },
}

/// Loads a JSON-lines file into a topic; prints how many records the broker acknowledged.
pub fn produce(args: &ProduceArgs) -> anyhow::Result<()> {
    if let Some(n) = args.partitions {
        kafka::create_topic(&args.brokers, &args.topic, n)?;
    }
    let key = (!args.key.is_empty()).then_some(args.key.as_str());
    let mut producer = LineProducer::new(&args.brokers, &args.topic, key, &BTreeMap::new())?;
    let input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&args.file)
            .with_context(|| format!("opening {}", args.file.display()))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let started = Instant::now();
    for (sent, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", args.file.display()))?;
        if args.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        producer.send(&line)?;
    }
    let acked = producer.finish()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {acked} record(s) to {} in {secs:.2}s ({:.0}/s)",
        args.topic,
        acked as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// `tickflow topics ...`.
pub fn topics(command: &TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Create {
            topic,
            partitions,
            brokers,
        } => {
            let created = kafka::create_topic(brokers, topic, *partitions)?;
            let n = kafka::partitions(brokers, topic, &BTreeMap::new(), &|| false)?.len();
            let what = if created { "created" } else { "exists" };
            println!("topic {topic} {what} with {n} partition(s)");
        }
        TopicsCommand::Read {
            topic,
            brokers,
            json,
        } => {
            use std::io::Write;
            let records = kafka::read_topic(brokers, topic)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for r in records {
                if *json {
                    writeln!(out, "{}", serde_json::to_string(&r)?)?;
                } else {
                    writeln!(out, "{}", r.value)?;
                }
            }
        }
    }
    Ok(())
}
