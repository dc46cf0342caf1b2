//! `fundflow flows`, `pledges` and `summary`, and the printing of totals for people: the
//! reviewers' analytics from a server (`--url`) or from the read model of a stopped data
//! directory, which the server's own query code answers in process, so both give the same
//! replies.

use std::path::Path;

use anyhow::Context;
use fundflow_api::{Dimension, FlowsReply, PledgesReply, SummaryReply, TotalsReply};
use fundflow_projector::ReadModel;
use fundflow_server::query::Queries;

use crate::Format;
use crate::args::{FlowsArgs, PledgesArgs, ReadSource, RejectionsArgs};
use crate::client::Client;

/// The read model of a stopped data directory, with the server's queries over it.
pub fn offline(data_dir: &Path) -> anyhow::Result<Queries> {
    let model_dir = data_dir.join("model");
    anyhow::ensure!(
        model_dir.exists(),
        "there is no read model in {} (run fundflow project first, or give --url)",
        model_dir.display()
    );
    let model = ReadModel::open(&model_dir).with_context(|| {
        format!(
            "cannot open {} (is a server running on it? then ask it with --url)",
            model_dir.display()
        )
    })?;
    Ok(Queries::offline(model))
}

fn client(source: &ReadSource, url: &str) -> anyhow::Result<Client> {
    Client::new(url, source.token.as_deref().unwrap_or(""))
}

/// A flag set as the query parameters the server reads.
fn params<T: serde::de::DeserializeOwned>(flags: &impl serde::Serialize) -> anyhow::Result<T> {
    let value = serde_json::to_value(flags).context("cannot read the flags")?;
    serde_json::from_value(value).context("cannot read the flags")
}

/// `fundflow rejections`.
pub async fn rejections(
    source: &ReadSource,
    page: &RejectionsArgs,
    format: Format,
) -> anyhow::Result<()> {
    let reply: fundflow_api::RejectionsReply = match &source.url {
        Some(url) if matches!(format, Format::Csv) => {
            let mut query = serde_json::to_value(page)?;
            query["format"] = "csv".into();
            print!(
                "{}",
                client(source, url)?
                    .get_text("/v1/rejections", &query)
                    .await?
            );
            return Ok(());
        }
        Some(url) => {
            client(source, url)?
                .get_with("/v1/rejections", page)
                .await?
        }
        None => offline(&source.data_dir)?
            .rejections(&params(page)?)
            .await
            .context("cannot list the rejections")?,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Format::Csv => print!(
            "{}",
            String::from_utf8(fundflow_api::rejections_csv(&reply.rejections)?)?
        ),
        Format::Table => {
            println!("as of seq {}", reply.as_of_seq);
            println!(
                "  {:>8} {:<16} {:<28} {:<20} message",
                "seq", "partner", "code", "field"
            );
            for r in &reply.rejections {
                println!(
                    "  {:>8} {:<16} {:<28} {:<20} {}",
                    r.seq, r.partner, r.code, r.field, r.message
                );
            }
            if let Some(cursor) = &reply.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
    }
    Ok(())
}

/// `fundflow flows`.
pub async fn flows(source: &ReadSource, filter: &FlowsArgs, format: Format) -> anyhow::Result<()> {
    let reply: FlowsReply = match &source.url {
        Some(url) if matches!(format, Format::Csv) => {
            let mut query = serde_json::to_value(filter)?;
            query["format"] = "csv".into();
            print!(
                "{}",
                client(source, url)?.get_text("/v1/flows", &query).await?
            );
            return Ok(());
        }
        Some(url) => client(source, url)?.get_with("/v1/flows", filter).await?,
        None => offline(&source.data_dir)?
            .flows(&params(filter)?, None)
            .await
            .context("cannot list the flows")?,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Format::Csv => print!(
            "{}",
            String::from_utf8(fundflow_api::flows_csv(&reply.flows)?)?
        ),
        Format::Table => {
            println!("as of seq {}", reply.as_of_seq);
            println!(
                "  {:>8} {:<10} {:<16} {:<16} {:<4} {:>18} {:>16} {:<8} {:<16} recipients",
                "seq", "date", "partner", "kind", "cur", "amount", "usd", "status", "grant"
            );
            for flow in &reply.flows {
                let recipients: Vec<&str> =
                    flow.allocations.iter().map(|a| a.key.as_str()).collect();
                println!(
                    "  {:>8} {:<10} {:<16} {:<16} {:<4} {:>18} {:>16} {:<8} {:<16} {}",
                    flow.seq,
                    flow.occurred_on,
                    flow.partner,
                    flow.kind,
                    flow.currency,
                    flow.amount,
                    flow.usd_equivalent.as_deref().unwrap_or("-"),
                    flow.status.as_str(),
                    flow.grant,
                    recipients.join(" ")
                );
            }
            if let Some(cursor) = &reply.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
    }
    Ok(())
}

/// `fundflow pledges`.
pub async fn pledges(
    source: &ReadSource,
    filter: &PledgesArgs,
    format: Format,
) -> anyhow::Result<()> {
    let reply: PledgesReply = match &source.url {
        Some(url) if matches!(format, Format::Csv) => {
            let mut query = serde_json::to_value(filter)?;
            query["format"] = "csv".into();
            print!(
                "{}",
                client(source, url)?.get_text("/v1/pledges", &query).await?
            );
            return Ok(());
        }
        Some(url) => client(source, url)?.get_with("/v1/pledges", filter).await?,
        None => offline(&source.data_dir)?
            .pledges(&params(filter)?, None)
            .await
            .context("cannot read the pledge book")?,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Format::Csv => print!(
            "{}",
            String::from_utf8(fundflow_api::pledges_csv(&reply.pledges)?)?
        ),
        Format::Table => {
            println!("as of seq {}", reply.as_of_seq);
            println!(
                "  {:<16} {:<24} {:<4} {:>16} {:>16} {:>16} {:>16} {:>8}",
                "partner",
                "pledge",
                "cur",
                "pledged",
                "paid",
                "outstanding",
                "parallel usd",
                "leverage"
            );
            for p in &reply.pledges {
                println!(
                    "  {:<16} {:<24} {:<4} {:>16} {:>16} {:>16} {:>16} {:>8}",
                    p.partner,
                    p.pledge_id,
                    p.currency,
                    p.pledged,
                    p.paid,
                    p.outstanding,
                    p.parallel_funding_usd,
                    p.leverage.as_deref().unwrap_or("-")
                );
            }
            if let Some(cursor) = &reply.next_cursor {
                println!("more: --cursor {cursor}");
            }
        }
    }
    Ok(())
}

/// `fundflow summary`.
pub async fn summary(
    source: &ReadSource,
    from: Option<&str>,
    to: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let reply: SummaryReply = match &source.url {
        Some(url) => {
            let query: Vec<(&str, &str)> = [("from", from), ("to", to)]
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect();
            client(source, url)?.get_with("/v1/summary", &query).await?
        }
        None => offline(&source.data_dir)?
            .summary(from, to)
            .await
            .context("cannot make the summary")?,
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reply)?),
        Format::Csv | Format::Table => print_summary(&reply),
    }
    Ok(())
}

/// The figures at a glance, for people.
pub fn print_summary(summary: &SummaryReply) {
    let period = match (&summary.from, &summary.to) {
        (Some(from), Some(to)) => format!("{from} to {to}"),
        (Some(from), None) => format!("from {from}"),
        (None, Some(to)) => format!("up to {to}"),
        (None, None) => "all time".to_owned(),
    };
    println!("At a glance, {period} (as of seq {}):", summary.as_of_seq);
    // A kind with nothing in the period says nothing.
    let recorded = summary
        .by_kind
        .iter()
        .filter(|k| k.usd_equivalent != "0.00" || !k.unconverted.is_empty() || k.countries > 0);
    for kind in recorded {
        let unconverted: Vec<String> = kind
            .unconverted
            .iter()
            .map(|u| format!("{} {}", u.currency, u.amount))
            .collect();
        let unconverted = if unconverted.is_empty() {
            String::new()
        } else {
            format!(", and unconverted {}", unconverted.join(", "))
        };
        println!(
            "  {:<17} USD {:>18}  ({} recipient countries{unconverted})",
            kind.kind, kind.usd_equivalent, kind.countries
        );
    }
    let regions: Vec<&str> = summary.regions.iter().map(|r| r.name.as_str()).collect();
    println!(
        "  countries benefiting {} (in {}: {})",
        summary.countries_benefiting,
        if regions.len() == 1 {
            "1 region".to_owned()
        } else {
            format!("{} regions", regions.len())
        },
        regions.join(", ")
    );
    println!(
        "  partners {}, grants {}, events applied {}, rejected {}",
        summary.partners, summary.grants, summary.events_applied, summary.events_rejected
    );
    for item in &summary.in_kind_items {
        println!(
            "  in kind: {} {} of {}",
            item.quantity, item.unit, item.item
        );
    }
}

/// Totals as a reply gives them, printed as asked.
pub fn print_totals(
    reply: &TotalsReply,
    group_by: &[Dimension],
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(reply)?),
        Format::Csv if group_by.is_empty() => {
            println!("{}", crate::replay::COLUMNS.join(","));
            for row in &reply.rows {
                println!("{}", crate::replay::fields(row).join(","));
            }
        }
        Format::Csv => print!(
            "{}",
            String::from_utf8(fundflow_api::totals_csv(&reply.rows, group_by)?)?
        ),
        Format::Table => {
            println!(
                "as of seq {}, model digest {}",
                reply.as_of_seq,
                reply.model_digest.as_deref().unwrap_or("(busy)")
            );
            let mut out = std::io::stdout().lock();
            crate::replay::write_table(&mut out, &reply.rows, group_by)?;
        }
    }
    Ok(())
}
