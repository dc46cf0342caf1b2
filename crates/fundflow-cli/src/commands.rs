//! Which module runs which command: the dispatch from parsed arguments to the command's own
//! function, each returning an error that `main` reports in one sentence.

use fundflow_server::app::Mode;

use crate::args::{
    AuditCommand, Command, ExportCommand, ImportCommand, LogCommand, NkeyCommand, TokenCommand,
};
use crate::{
    analytics, audit, client, interop, log_commands, nats_commands, quickstart, replay, serve,
};

/// Runs one command.
pub(crate) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::ReplayFile {
            file,
            format,
            totals,
        } => replay::replay_file(&file, format, &totals),
        Command::GenLog { events, seed, file } => replay::gen_log(&file, events, seed),
        Command::Flows {
            source,
            format,
            filter,
        } => analytics::flows(&source, &filter, format).await,
        Command::Rejections {
            source,
            format,
            page,
        } => analytics::rejections(&source, &page, format).await,
        Command::Pledges {
            source,
            format,
            filter,
        } => analytics::pledges(&source, &filter, format).await,
        Command::Summary {
            source,
            format,
            from,
            to,
        } => analytics::summary(&source, from.as_deref(), to.as_deref(), format).await,
        Command::Totals {
            data_dir,
            format,
            url,
            token,
            totals,
        } => match url {
            None => log_commands::totals(&data_dir, format, &totals).await,
            Some(url) => {
                client::totals_from_server(&url, token.as_deref().unwrap_or(""), &totals, format)
                    .await
            }
        },
        Command::PublishFile { file, log } => log_commands::publish_file(&file, &log).await,
        Command::Project {
            log,
            once,
            http,
            fold,
        } => {
            if once && http.config.is_some() {
                anyhow::bail!(
                    "--once folds and exits, so it serves no query API: drop --config, or --once"
                );
            }
            if http.config.is_none() {
                log_commands::project(&log, once, &fold).await
            } else {
                serve::run(Mode::Project, &log, &http, &fold).await
            }
        }
        Command::Serve { log, http, fold } => serve::run(Mode::Serve, &log, &http, &fold).await,
        Command::Gateway { log, http } => {
            serve::run(Mode::Gateway, &log, &http, &serve::FoldArgs::default()).await
        }
        Command::Quickstart { log, http, exit } => quickstart::run(&log, &http, exit).await,
        Command::Submit {
            file,
            url,
            token,
            wait,
        } => client::submit(&file, &url, &token, wait).await,
        Command::Token {
            command: TokenCommand::New { role, name, id },
        } => nats_commands::token_new(&role, &name, id.as_deref()),
        Command::Nkey {
            command: NkeyCommand::New { seed_file, role },
        } => nats_commands::nkey_new(&seed_file, &role),
        Command::NatsConfig {
            config,
            stream,
            out,
        } => nats_commands::nats_config(&config, &stream, out.as_deref()),
        Command::Log {
            command:
                LogCommand::Export {
                    source,
                    stream,
                    out,
                },
        } => audit::export(&source, &stream, &out).await,
        Command::Export {
            command:
                ExportCommand::Iati {
                    out,
                    source,
                    token,
                    publisher,
                    filters,
                },
        } => interop::export_iati(&out, &source, token.as_deref(), &publisher, &filters).await,
        Command::Export {
            command:
                ExportCommand::Fts {
                    out,
                    source,
                    token,
                    filters,
                },
        } => interop::export_fts(&out, &source, token.as_deref(), &filters).await,
        Command::Import {
            command:
                ImportCommand::Fts {
                    files,
                    partner,
                    url,
                    token,
                },
        } => interop::import_fts(&files, &partner, &url, &token).await,
        Command::Log {
            command: LogCommand::Verify { path },
        } => audit::verify_export(&path),
        Command::Log {
            command:
                LogCommand::Import {
                    path,
                    target,
                    stream,
                    replicas,
                },
        } => audit::import(&path, &target, &stream, replicas).await,
        Command::Audit {
            command:
                AuditCommand::Replay {
                    source,
                    stream,
                    cutoff,
                    format,
                    totals,
                },
        } => audit::audit_replay(&source, &stream, &cutoff, &totals, format).await,
        Command::Audit {
            command:
                AuditCommand::Verify {
                    url,
                    token,
                    source,
                    stream,
                },
        } => audit::audit_verify(&url, &token, &source, &stream).await,
        Command::Audit {
            command:
                AuditCommand::Report {
                    source,
                    stream,
                    cutoff,
                    out,
                    html,
                    format,
                },
        } => {
            let html = html
                || format.as_deref() == Some("html")
                || (format.is_none()
                    && out
                        .extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("html")));
            audit::audit_report(&source, &stream, &cutoff, &out, html).await
        }
        Command::Rebuild { log } => log_commands::rebuild(&log).await,
    }
}
