//! The NATS users of a deployment, generated from the access config so that the principals
//! fundflow knows and the users the NATS servers admit never drift apart
//! (`fundflow nats-config`). Each user is an NKey with an allow-list; whatever a list does not
//! name, the server refuses as a permissions violation.
//!
//! - The service (gateways and projectors) is the only user that may publish on the stream's
//!   subjects, `fundflow.v1.events.>`; of the JetStream API it may create and inspect the stream,
//!   read records and run consumers, but not delete, purge or edit the stream. It answers
//!   partners only in their inboxes: no `allow_responses`, which would let it publish on any
//!   reply subject a sender picks, the stream's included.
//! - A partner may publish only on its own submit subject and receive replies under its own
//!   inbox prefix, `_INBOX_<partner id>`, so that no partner can listen to another's replies.
//! - An auditor may read the stream (stream info, record gets, consumers) and write nothing.
//!   The consumer API cannot be narrowed by subject to what a consumer delivers where: an
//!   auditor could point a push consumer's deliveries at another subject. That gives it no
//!   power to write or delete records, nor to read more than it may already read, so auditor
//!   keys are for trusted auditors, as their HTTP tokens are.

use std::fmt::Write as _;

use crate::access::{AccessControl, AccessFile, ConfigError};
use crate::nats_service::{FOLDED_SUBJECT, SUBMIT_PREFIX};

/// The inbox prefix a partner's NATS client must use (`custom_inbox_prefix` in async-nats,
/// `inboxPrefix` in nats.js, ...): its replies arrive there and nowhere else.
pub fn partner_inbox_prefix(partner_id: &str) -> String {
    format!("_INBOX_{partner_id}")
}

/// One user and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUser {
    /// Who this is, for the comment above its entry.
    pub about: String,
    /// The public NKey.
    pub nkey: String,
    /// Subjects it may publish on.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// Why no users could be generated.
#[derive(Debug, thiserror::Error)]
pub enum NatsUsersError {
    /// The access config breaks a rule (checked as the server checks it).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stream name would not make a literal permission subject.
    #[error(
        "stream name {0:?}: a stream name here is letters, digits, _ and - only (it goes into every JetStream API permission, where a wildcard would widen them all)"
    )]
    StreamName(String),
}

/// Whether `stream` is safe inside a permission subject: non-empty, and no `.`, `*`, `>` or
/// anything else with a meaning there.
pub fn is_valid_stream_name(stream: &str) -> bool {
    !stream.is_empty()
        && stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The users of a config file's principals, for the stream `stream`. Checks the stream name and
/// the file (as the server does) first: this writes security config, so it trusts no caller.
pub fn nats_users(file: &AccessFile, stream: &str) -> Result<Vec<NatsUser>, NatsUsersError> {
    if !is_valid_stream_name(stream) {
        return Err(NatsUsersError::StreamName(stream.to_owned()));
    }
    AccessControl::from_file(file.clone())?;
    let read_stream = |extra: &[String]| {
        let mut subjects: Vec<String> = [
            "$JS.API.INFO".to_owned(),
            format!("$JS.API.STREAM.INFO.{stream}"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.>"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        ]
        .into();
        subjects.extend_from_slice(extra);
        subjects
    };
    let mut service_publish = vec![
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("{}>", fundflow_log::SUBJECT_PREFIX),
        FOLDED_SUBJECT.to_owned(),
    ];
    service_publish.extend(
        file.partners
            .iter()
            .filter(|p| p.nats_nkey.is_some())
            .map(|p| format!("{}.>", partner_inbox_prefix(&p.id))),
    );
    let mut users = Vec::new();
    for nkey in &file.nats.service_nkeys {
        users.push(NatsUser {
            about: "fundflow service (gateways and projectors): the only publisher on the stream"
                .into(),
            nkey: nkey.clone(),
            publish: read_stream(&service_publish),
            subscribe: vec![
                format!("{SUBMIT_PREFIX}*"),
                FOLDED_SUBJECT.to_owned(),
                "_INBOX.>".into(),
            ],
        });
    }
    for partner in &file.partners {
        if let Some(nkey) = &partner.nats_nkey {
            users.push(NatsUser {
                about: format!("partner {} ({})", partner.id, partner.name),
                nkey: nkey.clone(),
                publish: vec![format!("{SUBMIT_PREFIX}{}", partner.id)],
                subscribe: vec![format!("{}.>", partner_inbox_prefix(&partner.id))],
            });
        }
    }
    for auditor in &file.auditors {
        if let Some(nkey) = &auditor.nats_nkey {
            users.push(NatsUser {
                about: format!("auditor {}: reads the stream, writes nothing", auditor.name),
                nkey: nkey.clone(),
                publish: read_stream(&[]),
                subscribe: vec!["_INBOX.>".into()],
            });
        }
    }
    Ok(users)
}

/// The `authorization { users = [...] }` block for nats-server's config, which the configs in
/// `deploy/nats` include as `auth.conf`.
pub fn authorization_block(users: &[NatsUser], source: &str) -> String {
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "# Generated by `fundflow nats-config` from {source}: regenerate it rather than edit it.\n\
         # Any subject a user's lists do not name is refused as a permissions violation.\n\
         authorization {{\n  users = [\n"
    );
    for user in users {
        let _ = write!(
            text,
            "    # {}\n    {{\n      nkey: {:?}\n      permissions: {{\n        publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}] }}\n",
            user.about.replace('\n', " "),
            user.nkey,
            list(&user.publish),
            list(&user.subscribe),
        );
        text.push_str("      }\n    }\n");
    }
    text.push_str("  ]\n}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::new_nkey;

    fn file(text: &str) -> AccessFile {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn each_principal_gets_only_its_subjects() {
        let (_, service) = new_nkey().unwrap();
        let (_, partner) = new_nkey().unwrap();
        let (_, auditor) = new_nkey().unwrap();
        let hash = |c: char| c.to_string().repeat(64);
        let text = format!(
            "[nats]\nservice_nkeys = [\"{service}\"]\n\
             [[partners]]\nid = \"icshp\"\nname = \"ICSHP\"\ntoken_sha256 = \"{}\"\nnats_nkey = \"{partner}\"\n\
             [[partners]]\nid = \"http-only\"\nname = \"H\"\ntoken_sha256 = \"{}\"\n\
             [[auditors]]\nname = \"Audit\"\ntoken_sha256 = \"{}\"\nnats_nkey = \"{auditor}\"\n",
            hash('1'),
            hash('2'),
            hash('3')
        );
        let users = nats_users(&file(&text), "FUNDFLOW").unwrap();
        assert_eq!(users.len(), 3, "the HTTP-only partner has no NATS user");
        let [svc, icshp, audit] = &users[..] else {
            panic!("three users")
        };
        assert!(svc.publish.contains(&"fundflow.v1.events.>".to_owned()));
        assert!(svc.publish.contains(&"_INBOX_icshp.>".to_owned()));
        assert!(!svc.publish.iter().any(|s| s.contains("http-only")));
        assert_eq!(icshp.publish, ["fundflow.v1.submit.icshp"]);
        assert_eq!(icshp.subscribe, ["_INBOX_icshp.>"]);
        assert!(!audit.publish.iter().any(|s| s.starts_with("fundflow.")));
        assert!(!audit.publish.iter().any(|s| s.contains("STREAM.CREATE")));
        let block = authorization_block(&users, "fundflow.toml");
        assert!(block.contains(&format!("nkey: \"{partner}\"")), "{block}");
        assert!(
            block.contains("\"$JS.API.STREAM.INFO.FUNDFLOW\""),
            "{block}"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_the_rule() {
        let hash = "0".repeat(64);
        let bad = format!(
            "[[partners]]\nid = \"a\"\nname = \"A\"\ntoken_sha256 = \"{hash}\"\nnats_nkey = \"SUAXYZ\"\n"
        );
        let err = nats_users(&file(&bad), "FUNDFLOW").unwrap_err().to_string();
        assert!(err.contains("not a NATS user's public NKey"), "{err}");
        let (_, key) = new_nkey().unwrap();
        let twice = format!(
            "[nats]\nservice_nkeys = [\"{key}\"]\n[[auditors]]\nname = \"B\"\ntoken_sha256 = \"{hash}\"\nnats_nkey = \"{key}\"\n"
        );
        let err = nats_users(&file(&twice), "FUNDFLOW")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already given"), "{err}");
        let reviewer = format!(
            "[[reviewers]]\nname = \"R\"\ntoken_sha256 = \"{hash}\"\nnats_nkey = \"{key}\"\n"
        );
        let err = nats_users(&file(&reviewer), "FUNDFLOW")
            .unwrap_err()
            .to_string();
        assert!(err.contains("reviewers read over HTTP"), "{err}");
    }

    #[test]
    fn a_stream_name_that_would_widen_permissions_is_refused() {
        let empty = AccessFile::default();
        for bad in ["", "FUND.FLOW", "*", ">", "FUNDFLOW.>", "A B", "Ä"] {
            let err = nats_users(&empty, bad).unwrap_err();
            assert!(
                matches!(&err, NatsUsersError::StreamName(name) if name == bad),
                "{bad:?}: {err}"
            );
        }
        assert!(nats_users(&empty, "FUNDFLOW_2-b").is_ok());
    }
}
