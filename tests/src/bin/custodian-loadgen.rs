//! Drives the event store directly with many concurrent clients, for the crash-safety test.
//!
//! Each client appends `--events-per-append` events at a time to its own stream and prints
//! `ack CLIENT SEQ FIRST LAST` once the store has acknowledged the append as durable, so a test can
//! kill this process at any moment and know exactly what was promised.

use std::io::Write;

use clap::Parser;
use custodian_domain::{Actor, EventType, NewEvent, StreamName, Timestamp};
use custodian_store::{ExpectedVersion, StoreOptions};

#[derive(Parser)]
struct Args {
    /// SQLite path or PostgreSQL URL.
    #[arg(long)]
    database: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Appends per client.
    #[arg(long, default_value_t = 1000)]
    appends: usize,
    /// Events in each (atomic) append.
    #[arg(long, default_value_t = 3)]
    events_per_append: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = custodian_store::open(&args.database, StoreOptions::default()).await?;
    let run = uuid::Uuid::now_v7();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let store = store.clone();
        let per = args.events_per_append;
        let appends = args.appends;
        tasks.push(tokio::spawn(async move {
            let stream = StreamName::parse(&custodian_tests::load_stream(client))?;
            for seq in 0..appends {
                let events = (0..per)
                    .map(|part| {
                        Ok(NewEvent {
                            id: uuid::Uuid::now_v7(),
                            event_type: EventType::parse("load.appended")?,
                            schema: 1,
                            actor: Actor::system(),
                            occurred_at: Timestamp::parse("2026-11-25T00:00:00Z")?,
                            correlation_id: None,
                            causation_id: None,
                            data: serde_json::json!({
                                "run": run, "client": client, "seq": seq, "part": part, "of": per,
                            }),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let o = store.append(&stream, ExpectedVersion::Any, events).await?;
                let mut out = std::io::stdout().lock();
                writeln!(
                    out,
                    "ack {run} {client} {seq} {} {}",
                    o.first_position, o.last_position
                )?;
                out.flush()?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    store.close().await;
    Ok(())
}
