//! `custodian-replay history`: every event that touches one principal or one resource, read from
//! the log in pages, with what each event touches decided by the domain's own
//! [`custodian_domain::touches`], the same reading the service's audit trail uses.
//!
//! An event that continues an object (a session's refresh, a key's use, a grant's revocation)
//! touches what the object's opening event touched as a subject, so the command remembers the
//! objects opened about the principal or resource: memory grows with the answer, never with the
//! log.

use std::collections::HashSet;
use std::io::Write;

use clap::{ArgGroup, Args};
use custodian_domain::EventRecord;
use custodian_domain::policy::Resource;
use custodian_domain::touches::touches;
use serde::Serialize;

use crate::cli::{EXIT_UNREADABLE, EXIT_VERIFIED, SOURCE_HELP};
use crate::source::Source;

/// How many records `history` reads at a time.
const PAGE: usize = 1000;

/// Arguments of `history`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("about").required(true).args(["principal", "resource"])))]
pub struct HistoryArgs {
    /// Every event that touches this principal (a user, API key or service id), as the actor or
    /// as what the event is about
    #[arg(long, value_name = "ID")]
    pub principal: Option<String>,
    /// Every event that touches this resource, written type/id (project/p42, user/user_01...,
    /// group/admins, role/auditor, grant/grant_01...)
    #[arg(long, value_name = "TYPE/ID")]
    pub resource: Option<String>,
    /// Only events of this tenant
    #[arg(long)]
    pub tenant: Option<String>,
    /// The log.
    #[arg(value_name = "SOURCE", help = SOURCE_HELP)]
    pub source: String,
}

/// Who caused an event, as `history` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryActor {
    /// `user`, `api_key`, `service` or `system`.
    pub kind: String,
    /// Its id.
    pub id: String,
}

/// One event of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Its position.
    pub position: u64,
    /// When it occurred.
    pub time: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its stream.
    pub stream: String,
    /// Who caused it.
    pub actor: HistoryActor,
}

/// The answer: the events, and the position and time the log was read to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History {
    /// The last position read (0 for an empty log).
    pub position: u64,
    /// When the event at that position occurred (`None` for an empty log).
    pub time: Option<String>,
    /// The principal asked about.
    pub principal: Option<String>,
    /// The resource asked about.
    pub resource: Option<String>,
    /// The tenant the answer is limited to.
    pub tenant: Option<String>,
    /// Every event that touches it, oldest first.
    pub entries: Vec<HistoryEntry>,
}

/// What an event must touch to be in the answer.
enum Wanted<'a> {
    Principal(&'a str),
    Resource(String),
}

/// Reads the whole of `source` and answers every event that touches what `args` names.
pub async fn history(source: &mut Source, args: &HistoryArgs) -> Result<History, String> {
    let wanted = match (&args.principal, &args.resource) {
        (Some(p), None) if !p.trim().is_empty() => Wanted::Principal(p),
        (None, Some(r)) => Wanted::Resource(
            Resource::parse(r)
                .map_err(|e| format!("--resource: {e}"))?
                .to_string(),
        ),
        (Some(_), None) => return Err("--principal must not be empty".to_owned()),
        _ => return Err("give exactly one of --principal and --resource".to_owned()),
    };
    let mut answer = History {
        position: 0,
        time: None,
        principal: args.principal.clone(),
        resource: args.resource.clone(),
        tenant: args.tenant.clone(),
        entries: Vec::new(),
    };
    // The objects (tenant, type/id) opened by an event about what is wanted.
    let mut followed: HashSet<(String, String)> = HashSet::new();
    loop {
        let page = source
            .read_all(answer.position + 1, PAGE)
            .await
            .map_err(|e| source.read_error(e).to_string())?;
        let Some(last) = page.last() else {
            break;
        };
        let (last_position, last_time) = (last.position, last.occurred_at);
        for record in page {
            if args.tenant.as_deref().is_some_and(|t| t != record.tenant) {
                continue;
            }
            let t = touches(&record);
            let about = match &wanted {
                Wanted::Principal(p) => t.principals.contains(*p),
                Wanted::Resource(r) => t.resources.contains(r),
            };
            let acted = matches!(&wanted, Wanted::Principal(p) if t.actor.as_deref() == Some(*p));
            let continued = t
                .continues
                .as_ref()
                .is_some_and(|o| followed.contains(&(record.tenant.clone(), o.clone())));
            if about && let Some(object) = &t.opens {
                followed.insert((record.tenant.clone(), object.clone()));
            }
            if about || acted || continued {
                answer.entries.push(entry(&record));
            }
        }
        answer.position = last_position;
        answer.time = Some(last_time.to_string());
    }
    Ok(answer)
}

fn entry(record: &EventRecord) -> HistoryEntry {
    HistoryEntry {
        position: record.position,
        time: record.occurred_at.to_string(),
        event_type: record.event_type.to_string(),
        stream: record.stream.to_string(),
        actor: HistoryActor {
            kind: record.actor.kind.as_str().to_owned(),
            id: record.actor.id.clone(),
        },
    }
}

/// `history`: prints the answer on `out` (a table, or one JSON document with `json`) and returns
/// the exit status: 0, or 2 when the arguments are wrong or the source cannot be read (one line on
/// `err`).
pub async fn run(args: &HistoryArgs, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let fail = |err: &mut dyn Write, message: String| {
        let _ = writeln!(err, "custodian-replay: {message}");
        let _ = err.flush();
        EXIT_UNREADABLE
    };
    if let Some(r) = &args.resource
        && let Err(e) = Resource::parse(r)
    {
        return fail(err, format!("--resource: {e}"));
    }
    let mut source = match Source::open(&args.source).await {
        Ok(source) => source,
        Err(e) => return fail(err, e.to_string()),
    };
    let answer = history(&mut source, args).await;
    source.close().await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return fail(err, e),
    };
    let written = if json {
        serde_json::to_string_pretty(&answer)
            .map_err(std::io::Error::other)
            .and_then(|text| writeln!(out, "{text}"))
    } else {
        write_table(out, &answer)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => EXIT_VERIFIED,
        Err(e) => fail(err, format!("cannot write the answer: {e}")),
    }
}

fn write_table(out: &mut dyn Write, answer: &History) -> std::io::Result<()> {
    let time = answer.time.as_deref().unwrap_or("the log is empty");
    writeln!(out, "as of position {} ({time})", answer.position)?;
    let about = answer
        .principal
        .as_deref()
        .or(answer.resource.as_deref())
        .unwrap_or_default();
    if answer.entries.is_empty() {
        return writeln!(out, "no event touches {about}");
    }
    let rows: Vec<[String; 5]> = answer
        .entries
        .iter()
        .map(|e| {
            [
                e.position.to_string(),
                e.time.clone(),
                e.event_type.clone(),
                e.stream.clone(),
                format!("{}:{}", e.actor.kind, e.actor.id),
            ]
        })
        .collect();
    let header = ["POSITION", "TIME", "TYPE", "STREAM", "ACTOR"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
