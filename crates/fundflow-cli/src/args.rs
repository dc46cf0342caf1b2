//! The command line: every command and flag of `fundflow`, as clap parses them, and the checks
//! of flag values that need the reference data.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{audit, serve};

/// An event-sourced ledger for donations and resource mobilization.
#[derive(Parser)]
#[command(name = "fundflow", version, about)]
pub(crate) struct Cli {
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
    /// How logs are written to standard error (level from RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing the flags would only obscure clap's derive"
)]
pub(crate) enum Command {
    /// Try fundflow on this machine: embedded log, the sample dataset through the gateway,
    /// totals printed, and the server running on 127.0.0.1:8080 until Ctrl-C.
    Quickstart {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        http: serve::HttpArgs,
        /// Exit after printing the totals instead of serving.
        #[arg(long)]
        exit: bool,
    },
    /// Run the HTTP API, the gateway and the projector in one process.
    Serve {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        http: serve::HttpArgs,
        #[command(flatten)]
        fold: serve::FoldArgs,
    },
    /// Run a stateless submit gateway (HTTP and NATS) on the JetStream log.
    Gateway {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        http: serve::HttpArgs,
    },
    /// Submit a file of events (NDJSON, or CSV when it ends in .csv) to a server.
    Submit {
        /// The file.
        file: PathBuf,
        /// The server.
        #[arg(long, env = "FUNDFLOW_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The partner's bearer token.
        #[arg(long, env = "FUNDFLOW_TOKEN", hide_env_values = true)]
        token: String,
        /// Wait for the fold's verdict on each event.
        #[arg(long)]
        wait: bool,
    },
    /// Write the applied flows in the field's formats: an IATI 2.03 activity file, an FTS-style
    /// flow table.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Bring in flows that others reported in the field's formats.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// The log as a portable file: export it, verify an export, restore a log from one.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Replay the log independently: totals as of a seq or a date, a check of a running server,
    /// a report a person can sign.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Bearer tokens for the access config.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// NATS user keys (NKeys) for the access config.
    Nkey {
        #[command(subcommand)]
        command: NkeyCommand,
    },
    /// Write nats-server's `authorization` block (the users and their permissions) from the
    /// access config, for the configs in deploy/nats.
    NatsConfig {
        /// The access config (TOML) the gateways and projectors use.
        #[arg(long, env = "FUNDFLOW_CONFIG")]
        config: PathBuf,
        /// The JetStream stream's name.
        #[arg(long, env = "FUNDFLOW_STREAM", default_value = "FUNDFLOW")]
        stream: String,
        /// Where to write it (replaced atomically); standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fold a file of length-delimited envelopes (or a log export) and print its totals and
    /// digests.
    ReplayFile {
        /// The file: envelopes as prost length-delimited records, seq 1, 2, 3, ... in file order,
        /// or an export of `fundflow log export`.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        #[command(flatten)]
        totals: TotalsArgs,
    },
    /// Write a seeded, realistic synthetic log for tests and benchmarks.
    GenLog {
        /// How many records.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// The seed: the same seed gives the same file, byte for byte.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write it.
        file: PathBuf,
    },
    /// Publish a file of length-delimited envelopes onto the log, in file order.
    PublishFile {
        /// The file, as written by `gen-log`.
        file: PathBuf,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Fold the log into the read model in DATA_DIR and keep it current; with --config, also
    /// serve the query API.
    Project {
        #[command(flatten)]
        log: LogArgs,
        /// Fold up to the log's last sequence at start, then exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        http: serve::HttpArgs,
        #[command(flatten)]
        fold: serve::FoldArgs,
    },
    /// Drop the read model in DATA_DIR and fold the log again from sequence 1.
    Rebuild {
        #[command(flatten)]
        log: LogArgs,
    },
    /// The flows behind the totals, one per event, newest first (from a server with --url, or
    /// from a stopped data directory).
    Flows {
        #[command(flatten)]
        source: ReadSource,
        /// Output format: table, json, or csv (one row per allocation).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        filter: FlowsArgs,
    },
    /// The pledge book: pledged, paid, outstanding and the parallel funding each grant drew.
    Pledges {
        #[command(flatten)]
        source: ReadSource,
        /// Output format: table, json, or csv (one row per pledge line).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        filter: PledgesArgs,
    },
    /// The records the fold rejected, newest first, with their codes and fields (from a server
    /// with --url, or from a stopped data directory).
    Rejections {
        #[command(flatten)]
        source: ReadSource,
        /// Output format: table, json, or csv.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        page: RejectionsArgs,
    },
    /// The figures at a glance for a period.
    Summary {
        #[command(flatten)]
        source: ReadSource,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The first day counted (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// The last day counted (YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
    },
    /// Print totals: from a server with --url, else from the read model in DATA_DIR (which no
    /// process may hold open).
    Totals {
        /// The data directory of `fundflow project`.
        #[arg(long, env = "FUNDFLOW_DATA_DIR", default_value = "fundflow-data")]
        data_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// A server to ask instead of the local read model.
        #[arg(long, env = "FUNDFLOW_URL")]
        url: Option<String>,
        /// A reviewer's or auditor's token, with --url.
        #[arg(long, env = "FUNDFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        totals: TotalsArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum ExportCommand {
    /// One IATI 2.03 `iati-activities` file (see README.md, "IATI and FTS" for the mapping).
    Iati {
        /// The XML file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        source: ExportSource,
        /// A reviewer's or auditor's token, with --url.
        #[arg(long, env = "FUNDFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        publisher: PublisherArgs,
        #[command(flatten)]
        filters: FlowFilters,
    },
    /// FTS-style flows, one row per allocation: CSV or JSON by the extension of --out.
    Fts {
        /// The file to write: `.csv` or `.json`.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        source: ExportSource,
        /// A reviewer's or auditor's token, with --url.
        #[arg(long, env = "FUNDFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        filters: FlowFilters,
    },
}

/// Where an export's flows come from: a server, a stopped data directory, or a log export.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false, id = "export_source")]
pub struct ExportSource {
    /// A server (a reviewer's or auditor's token with --token); the server's IATI publisher
    /// settings apply.
    #[arg(long, env = "FUNDFLOW_URL")]
    pub url: Option<String>,
    /// The data directory of `fundflow project` or `serve` (no process may hold it open).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A log export (`fundflow log export`), folded afresh into a temporary read model.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// The reporting organisation of an IATI file.
#[derive(Args, Clone, Debug, Default)]
pub struct PublisherArgs {
    /// The reporting organisation's IATI identifier (e.g. an `XM-DAC-…` or `XI-IATI-…`
    /// ref): the prefix of every activity's `iati-identifier`.
    #[arg(long, env = "FUNDFLOW_IATI_REF")]
    pub iati_ref: Option<String>,
    /// Its IATI OrganisationType code (`40` multilateral, `60` foundation, `80` academic,
    /// training and research, ...).
    #[arg(long, env = "FUNDFLOW_IATI_ORG_TYPE")]
    pub iati_org_type: Option<String>,
    /// Its name.
    #[arg(long, env = "FUNDFLOW_IATI_ORG_NAME")]
    pub iati_org_name: Option<String>,
    /// The language of the file's text (`xml:lang`).
    #[arg(long, env = "FUNDFLOW_IATI_LANG", default_value = "en")]
    pub iati_lang: String,
}

impl PublisherArgs {
    /// The publisher, when its ref is given (then its type and name must be too).
    pub fn publisher(&self) -> anyhow::Result<Option<fundflow_interop::iati::Publisher>> {
        let Some(reference) = &self.iati_ref else {
            anyhow::ensure!(
                self.iati_org_type.is_none() && self.iati_org_name.is_none(),
                "--iati-org-type and --iati-org-name need --iati-ref (the reporting organisation's identifier)"
            );
            return Ok(None);
        };
        let (Some(org_type), Some(name)) = (&self.iati_org_type, &self.iati_org_name) else {
            anyhow::bail!(
                "--iati-ref needs --iati-org-type (an IATI OrganisationType code) and --iati-org-name"
            );
        };
        anyhow::ensure!(
            !reference.trim().is_empty() && !reference.contains([' ', '/', '&', '|', '?']),
            "--iati-ref {reference:?} cannot prefix IATI identifiers (no spaces, /, &, | or ?)"
        );
        Ok(Some(fundflow_interop::iati::Publisher {
            ref_: reference.clone(),
            org_type: org_type.clone(),
            name: name.clone(),
            lang: self.iati_lang.clone(),
        }))
    }
}

/// The flags that select flows, for `fundflow flows` and the exports (the query parameters of
/// `GET /v1/flows` and `/v1/exports/…` of the same names).
#[derive(Args, Clone, Debug, Default, serde::Serialize)]
pub struct FlowFilters {
    /// Only this kind: pledged, paid, parallel_funding or in_kind.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Only this partner's flows.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// Only flows to this country (ISO alpha-2 or alpha-3).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Only flows to this M49 area or any country in it.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Only flows of this grant.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Only flows of this donor.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub donor: Option<String>,
    /// Only flows of this sector.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sector: Option<String>,
    /// Only flows that occurred on or after this date.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only flows that occurred on or before this date.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum ImportCommand {
    /// Submit FTS API flows (`{"data": {"flows": [...]}}`) as the partner's events: idempotent
    /// (a flow's ref is its FTS id and version), a later version reverses the earlier one, and
    /// what cannot be recorded as given is reported by flow id; exit 1 if anything was refused.
    Fts {
        /// FTS API replies (a flow found in several files is imported once).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The partner whose events they become (the token's own).
        #[arg(long)]
        partner: String,
        /// The server.
        #[arg(long, env = "FUNDFLOW_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The partner's bearer token.
        #[arg(long, env = "FUNDFLOW_TOKEN", hide_env_values = true)]
        token: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum LogCommand {
    /// Write the log as length-delimited LogRecords with their digest chain, plus
    /// OUT.manifest.json.
    Export {
        #[command(flatten)]
        source: audit::SourceArgs,
        #[command(flatten)]
        stream: audit::StreamArgs,
        /// The export file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check an export: the digest chain, every record, the sequence and the manifest.
    Verify {
        /// The export file (its manifest is beside it).
        path: PathBuf,
    },
    /// Restore a log from an export: verify it, then append its records at their own seqs to
    /// an empty stream or embedded log, or to one that holds a prefix of the export (an import
    /// that was interrupted goes on after it).
    Import {
        /// The export file (its manifest is beside it).
        path: PathBuf,
        #[command(flatten)]
        target: audit::TargetArgs,
        #[command(flatten)]
        stream: audit::StreamArgs,
        /// Replicas of the stream when creating it (1 on one node, 3 in a cluster).
        #[arg(long, env = "FUNDFLOW_REPLICAS")]
        replicas: Option<usize>,
    },
}

#[derive(Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing the flags would only obscure clap's derive"
)]
pub(crate) enum AuditCommand {
    /// Fold the log afresh, in memory, and print its totals and digests.
    Replay {
        #[command(flatten)]
        source: audit::SourceArgs,
        #[command(flatten)]
        stream: audit::StreamArgs,
        #[command(flatten)]
        cutoff: audit::CutoffArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        #[command(flatten)]
        totals: TotalsArgs,
    },
    /// Compare a running server's checkpoint with an independent replay; exit 0 only on a match.
    Verify {
        /// The server.
        #[arg(long, env = "FUNDFLOW_URL")]
        url: String,
        /// An auditor's token.
        #[arg(long, env = "FUNDFLOW_TOKEN", hide_env_values = true)]
        token: String,
        #[command(flatten)]
        source: audit::SourceArgs,
        #[command(flatten)]
        stream: audit::StreamArgs,
    },
    /// Write a report (Markdown, or HTML with --html) of a replay.
    Report {
        #[command(flatten)]
        source: audit::SourceArgs,
        #[command(flatten)]
        stream: audit::StreamArgs,
        #[command(flatten)]
        cutoff: audit::CutoffArgs,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// HTML instead of Markdown (also chosen by an --out ending in .html).
        #[arg(long)]
        html: bool,
        /// `md` or `html` (the same as --html).
        #[arg(long, value_parser = ["md", "html"])]
        format: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a fresh random token and the config lines that grant it a role.
    New {
        /// partner, reviewer or auditor.
        #[arg(long, default_value = "partner")]
        role: String,
        /// The principal's name.
        #[arg(long, default_value = "")]
        name: String,
        /// For a partner: its partner id.
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum NkeyCommand {
    /// Write a fresh NATS user seed to a file (mode 0600) and print the public key with the
    /// config line that grants it a role.
    New {
        /// Where to write the seed; an existing file is never overwritten.
        #[arg(long)]
        seed_file: PathBuf,
        /// service (gateways and projectors), partner or auditor.
        #[arg(long, default_value = "partner")]
        role: String,
    },
}

/// Which log, and where the read model lives.
#[derive(Args, Clone)]
pub struct LogArgs {
    /// The NATS servers of the JetStream log, comma-separated (a cluster's nodes).
    #[arg(
        long,
        env = "FUNDFLOW_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// A NATS credentials file (JWT and seed).
    #[arg(long, env = "FUNDFLOW_NATS_CREDS", conflicts_with = "nats_nkey")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding the NATS user's NKey seed (see `fundflow nkey new`).
    #[arg(long, env = "FUNDFLOW_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// The connection's name on the NATS servers' monitoring pages (default: `fundflow
    /// serve`, `fundflow gateway` or `fundflow project` for the servers, `fundflow` otherwise).
    #[arg(long, env = "FUNDFLOW_NATS_NAME")]
    pub nats_name: Option<String>,
    /// Use the embedded log in DATA_DIR/log instead of NATS (one machine, no server).
    #[arg(long)]
    pub embedded: bool,
    /// The JetStream stream's name.
    #[arg(long, env = "FUNDFLOW_STREAM", default_value = "FUNDFLOW")]
    pub stream: String,
    /// Replicas of the stream when creating it (1 on one node, 3 in a cluster); an existing
    /// stream must have as many.
    #[arg(long, env = "FUNDFLOW_REPLICAS")]
    pub replicas: Option<usize>,
    /// JetStream's duplicate window in seconds when creating the stream; an existing stream
    /// must have the same.
    #[arg(long)]
    pub duplicate_window_secs: Option<u64>,
    /// Where the read model (DATA_DIR/model) and the embedded log (DATA_DIR/log) live.
    #[arg(long, env = "FUNDFLOW_DATA_DIR", default_value = "fundflow-data")]
    pub data_dir: PathBuf,
}

impl LogArgs {
    /// The library's log config (a log that may create its stream: the auditor's tools build
    /// their own, read only).
    pub fn config(&self) -> fundflow_server::app::LogConfig {
        fundflow_server::app::LogConfig {
            nats_url: self.nats_url.clone(),
            nats_creds: self.nats_creds.clone(),
            nats_nkey: self.nats_nkey.clone(),
            nats_name: self.nats_name.clone(),
            read_only: false,
            embedded: self.embedded,
            stream: self.stream.clone(),
            replicas: self.replicas,
            duplicate_window: self
                .duplicate_window_secs
                .map(std::time::Duration::from_secs),
            data_dir: self.data_dir.clone(),
        }
    }
}

/// Where a read command reads: a server (`--url`, with a token) or the read model of a stopped
/// data directory.
#[derive(Args, Clone, Debug)]
pub struct ReadSource {
    /// The data directory of `fundflow project` or `serve`, read when no --url is given.
    #[arg(long, env = "FUNDFLOW_DATA_DIR", default_value = "fundflow-data")]
    pub data_dir: PathBuf,
    /// A server to ask instead of the local read model.
    #[arg(long, env = "FUNDFLOW_URL")]
    pub url: Option<String>,
    /// A token, with --url (a partner's reads its own flows and pledges only).
    #[arg(long, env = "FUNDFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The page of `GET /v1/rejections`, as flags.
#[derive(Args, Clone, Debug, Default, serde::Serialize)]
pub struct RejectionsArgs {
    /// Rejections per page (default 100, at most 1,000).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The next_cursor of the previous page.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The filters of `GET /v1/flows`, as flags.
#[derive(Args, Clone, Debug, Default, serde::Serialize)]
pub struct FlowsArgs {
    /// Which flows.
    #[command(flatten)]
    #[serde(flatten)]
    pub select: FlowFilters,
    /// applied (default), reversed or all.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Flows per page (default 100, at most 1,000).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The page after this one (a `next_cursor` of an earlier reply).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The filters of `GET /v1/pledges`, as flags.
#[derive(Args, Clone, Debug, Default, serde::Serialize)]
pub struct PledgesArgs {
    /// Only this partner's pledges.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// Only this pledge id.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Only pledges of this sector.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sector: Option<String>,
    /// open, paid or all (default).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only pledges that occurred on or after this date.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only pledges that occurred on or before this date.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Pledges per page (default 100, at most 1,000).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// The page after this one.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Which totals, grouped how: the parameters of `GET /v1/totals` as flags, for `fundflow
/// totals`, `replay-file` and `audit replay` alike, so that an auditor asks a replay exactly
/// what a reviewer asked the server.
#[derive(Args, Clone, Debug, Default)]
pub struct TotalsArgs {
    /// Only this scope: country, region, subregion, intermediate or global.
    #[arg(long, value_parser = parse_scope)]
    pub scope: Option<String>,
    /// Only this kind: pledged, paid, parallel_funding or in_kind.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<String>,
    /// Only this currency (an ISO 4217 code).
    #[arg(long, value_parser = parse_currency)]
    pub currency: Option<String>,
    /// Only the row of this country (alpha-3) or area (M49 code).
    #[arg(long)]
    pub key: Option<String>,
    /// Group by these dimensions, comma-separated: partner, year, quarter, month, grant,
    /// sector, donor.
    #[arg(long)]
    pub group_by: Option<String>,
    /// Only this partner's flows.
    #[arg(long)]
    pub partner: Option<String>,
    /// Only flows of this grant (an empty value: flows with no grant).
    #[arg(long)]
    pub grant: Option<String>,
    /// Only flows of this sector (an empty value: flows with none).
    #[arg(long)]
    pub sector: Option<String>,
    /// Only flows of this donor (an empty value: flows with none).
    #[arg(long)]
    pub donor: Option<String>,
    /// Only flows that occurred on or after this date (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<String>,
    /// Only flows that occurred on or before this date (YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<String>,
}

impl TotalsArgs {
    /// The API's parameters.
    pub fn params(&self) -> fundflow_api::TotalsParams {
        fundflow_api::TotalsParams {
            scope: self.scope.clone(),
            kind: self.kind.clone(),
            currency: self.currency.clone(),
            key: self.key.clone(),
            group_by: self.group_by.clone(),
            partner: self.partner.clone(),
            grant: self.grant.clone(),
            sector: self.sector.clone(),
            donor: self.donor.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }

    /// The validated query; an error names the flag and the rule.
    pub fn query(&self) -> anyhow::Result<fundflow_api::TotalsQuery> {
        fundflow_api::TotalsQuery::parse(&self.params()).map_err(|err| {
            // The detail starts with the API's parameter name: say the flag's instead.
            let rule = err
                .detail
                .strip_prefix(err.parameter)
                .unwrap_or(&err.detail);
            anyhow::anyhow!("--{}{rule}", err.parameter.replace('_', "-"))
        })
    }
}

/// How a report is printed.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// The JSON document every fundflow command that reports totals prints.
    Json,
    /// An aligned table for people.
    Table,
    /// Comma-separated totals, one row per line, with a header.
    Csv,
}

/// `--scope`, checked here for the local read model and a server alike (the server checks
/// again: it is its own API).
fn parse_scope(name: &str) -> Result<String, String> {
    fundflow_domain::Scope::parse(name)
        .map(|_| name.to_owned())
        .ok_or_else(|| "not one of country, region, subregion, intermediate, global".to_owned())
}

/// `--kind`.
fn parse_kind(name: &str) -> Result<String, String> {
    fundflow_domain::TotalKind::parse(name)
        .map(|_| name.to_owned())
        .ok_or_else(|| "not one of pledged, paid, parallel_funding, in_kind".to_owned())
}

/// `--currency`.
fn parse_currency(code: &str) -> Result<String, String> {
    fundflow_refdata::currency_by_code(code)
        .map(|_| code.to_owned())
        .ok_or_else(|| "not an ISO 4217 currency code".to_owned())
}
