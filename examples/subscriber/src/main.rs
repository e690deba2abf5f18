//! Prints every Custodian event from NATS JetStream, the way an audit or SIEM consumer would take
//! them: a durable pull consumer on the `CUSTODIAN` stream that acknowledges each event after
//! handling it, so after downtime it resumes exactly where it stopped, and that skips an event
//! whose id it has already handled (the relay delivers at least once).
//!
//! ```sh
//! cargo run -p custodian-example-subscriber -- --nats-url nats://127.0.0.1:4222 --durable siem
//! # only failed logins, in every tenant:
//! cargo run -p custodian-example-subscriber -- --durable logins --filter 'custodian.*.user.user.login_failed'
//! ```

use std::collections::{HashSet, VecDeque};

use anyhow::Context;
use async_nats::jetstream::{self, consumer::AckPolicy, consumer::DeliverPolicy, consumer::pull};
use clap::Parser;
use futures::StreamExt;

#[derive(Parser)]
struct Args {
    /// NATS server.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Durable consumer name: the server remembers how far this consumer got.
    #[arg(long, default_value = "example-subscriber")]
    durable: String,
    /// Subjects to receive: `custodian.{tenant}.{aggregate}.{type}`, e.g. `custodian.acme.>` for
    /// one tenant, `custodian.*.user.user.login_failed` for failed logins everywhere, or
    /// `custodian._system.signing_key.signing_key.issued` for every signing key issued.
    #[arg(long, default_value = "custodian.>")]
    filter: String,
}

/// Remembers the last ids handled, to drop the rare redelivery.
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    const CAPACITY: usize = 100_000;

    fn first_time(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(&args.nats_url)
        .await
        .with_context(|| format!("cannot connect to {}", args.nats_url))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream("CUSTODIAN")
        .await
        .context("the CUSTODIAN stream does not exist yet: start the server with --nats-url")?;
    let consumer = stream
        .get_or_create_consumer(
            &args.durable,
            pull::Config {
                durable_name: Some(args.durable.clone()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                filter_subject: args.filter.clone(),
                ..pull::Config::default()
            },
        )
        .await?;
    let mut seen = Seen {
        ids: HashSet::new(),
        order: VecDeque::new(),
    };
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("receiving: {e}"))?;
        let event: serde_json::Value = serde_json::from_slice(&message.payload)?;
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        if seen.first_time(&id) {
            println!(
                "{position:>8} {time} {kind:<10} {tenant:<12} {typ:<28} {subject}",
                position = event["position"],
                time = event["time"].as_str().unwrap_or_default(),
                kind = event["actorkind"].as_str().unwrap_or_default(),
                tenant = event["tenant"].as_str().unwrap_or_default(),
                typ = event["type"].as_str().unwrap_or_default(),
                subject = event["subject"].as_str().unwrap_or_default(),
            );
        }
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("acknowledging: {e}"))?;
    }
    Ok(())
}
