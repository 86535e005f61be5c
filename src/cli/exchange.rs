//! `strom exchange create|list|describe|bind|unbind|delete|publish`.

use std::time::Duration;

use clap::Subcommand;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use super::output::{noteln, outln};
use super::produce::{durability, headers, read_lines, split, MAX_LINE_BYTES};
use super::{describe, Connect, Stop};
use crate::grpc::pb;

#[derive(clap::Args)]
pub struct ExchangeArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create an exchange.
    Create {
        name: String,
        /// direct (the same key), topic (`*` one word, `#` any words, between dots) or
        /// fanout (every binding).
        #[arg(long = "type", short = 't')]
        kind: String,
    },
    /// List exchanges: name, type and number of bindings.
    List,
    /// Show an exchange's bindings, one `TOPIC KEY` a line.
    Describe { name: String },
    /// Bind a topic: publishes whose routing key matches KEY are appended to it.
    Bind {
        exchange: String,
        topic: String,
        /// Binding key (none for a fanout exchange).
        #[arg(long, short = 'k', default_value = "")]
        key: String,
    },
    /// Remove a binding.
    Unbind {
        exchange: String,
        topic: String,
        #[arg(long, short = 'k', default_value = "")]
        key: String,
    },
    /// Delete an exchange and its bindings (the topics keep their records).
    Delete { name: String },
    /// Publish the lines of stdin (or a file), one record each, with a routing key.
    Publish {
        exchange: String,
        /// The routing key of every line.
        #[arg(long, short = 'r')]
        routing_key: String,
        /// Split each line at the first SEP into key and value.
        #[arg(long, short = 'K', value_name = "SEP")]
        key_separator: Option<String>,
        /// Header `name=value` added to every record (repeatable).
        #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Read lines from this file instead of stdin.
        #[arg(long, short = 'f')]
        file: Option<std::path::PathBuf>,
        /// `fsync` or `page_cache` (default: each topic's setting).
        #[arg(long)]
        durability: Option<String>,
        /// Accept that lines no binding takes are dropped (default: refused).
        #[arg(long)]
        drop_unroutable: bool,
    },
}

/// Lines in one publish at most, and their bytes: a publish is appended to every topic
/// bound, as one batch each.
const PUBLISH_LINES: usize = 1000;
const PUBLISH_BYTES: usize = 1 << 20;
/// How long a publish waits for more lines.
const LINGER: Duration = Duration::from_millis(5);

pub async fn run(args: ExchangeArgs) -> Result<(), Stop> {
    let client = args.connect.client().await?;
    let mut exchanges = client.exchanges();
    match args.action {
        Action::Create { name, kind } => {
            exchanges.create(&name, &kind).await.map_err(describe)?;
            noteln!("created {kind} exchange {name}");
        }
        Action::List => {
            for e in exchanges.list().await.map_err(describe)? {
                outln!("{}\t{}\t{}", e.name, e.r#type, e.bindings)?;
            }
        }
        Action::Describe { name } => {
            let described = exchanges.describe(&name).await.map_err(describe)?;
            noteln!("{} exchange {}", described.r#type, described.name);
            for b in described.bindings {
                outln!("{}\t{}", b.topic, b.key)?;
            }
        }
        Action::Bind {
            exchange,
            topic,
            key,
        } => match exchanges
            .bind(&exchange, &topic, &key)
            .await
            .map_err(describe)?
        {
            true => noteln!("bound {topic} to {exchange} with key {key:?}"),
            false => noteln!("{topic} was already bound to {exchange} with key {key:?}"),
        },
        Action::Unbind {
            exchange,
            topic,
            key,
        } => match exchanges
            .unbind(&exchange, &topic, &key)
            .await
            .map_err(describe)?
        {
            true => noteln!("unbound {topic} from {exchange} (key {key:?})"),
            false => noteln!("{topic} was not bound to {exchange} with key {key:?}"),
        },
        Action::Delete { name } => {
            exchanges.delete(&name).await.map_err(describe)?;
            noteln!("deleted exchange {name}");
        }
        Action::Publish {
            exchange,
            routing_key,
            key_separator,
            headers: header_flags,
            file,
            durability: flag,
            drop_unroutable,
        } => {
            let request = pb::PublishRequest {
                exchange,
                routing_key,
                durability: durability(flag.as_deref())? as i32,
                drop_unroutable,
                ..Default::default()
            };
            let headers = headers(&header_flags)?;
            let input: Box<dyn AsyncRead + Unpin + Send> = match &file {
                Some(path) => Box::new(
                    tokio::fs::File::open(path)
                        .await
                        .map_err(|e| format!("--file {}: {e}", path.display()))?,
                ),
                None => Box::new(tokio::io::stdin()),
            };
            let (send, mut lines) = mpsc::channel(PUBLISH_LINES);
            tokio::spawn(read_lines(input, send, MAX_LINE_BYTES));
            let (mut records, mut requests) = (0u64, 0u64);
            let separator = key_separator.as_deref().map(str::as_bytes);
            'input: loop {
                let mut publish = request.clone();
                let mut bytes = 0;
                // The first line waits as long as it takes; the rest, LINGER.
                while publish.records.len() < PUBLISH_LINES && bytes < PUBLISH_BYTES {
                    let next = match publish.records.is_empty() {
                        true => lines.recv().await,
                        false => match tokio::time::timeout(LINGER, lines.recv()).await {
                            Ok(next) => next,
                            Err(_) => break,
                        },
                    };
                    let Some(line) = next else {
                        if publish.records.is_empty() {
                            break 'input;
                        }
                        break;
                    };
                    let (line, _held) = line?;
                    bytes += line.len();
                    let (key, value) = split(line, separator);
                    publish.records.push(pb::Record {
                        key,
                        value,
                        headers: headers.clone(),
                        ..Default::default()
                    });
                }
                let n = publish.records.len() as u64;
                exchanges.publish_request(publish).await.map_err(|status| {
                    format!(
                        "{} (after {records} records were published)",
                        describe(status)
                    )
                })?;
                records += n;
                requests += 1;
            }
            noteln!("published {records} records in {requests} requests");
        }
    }
    Ok(())
}
