//! Who may do what: principals from the `--config` TOML file, each with a role and the SHA-256 of
//! its bearer token (never the token itself), and the check of a presented token.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A principal's role, from least to most trusted reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A partner institution: submits its own events and reads its own outcomes.
    Partner,
    /// A finance reviewer: reads totals, pledges and every outcome.
    Reviewer,
    /// An auditor: what a reviewer reads, plus checkpoints and the log.
    Auditor,
}

impl Role {
    /// The role's name in the config file and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Partner => "partner",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What it may do.
    pub role: Role,
    /// Its display name.
    pub name: String,
    /// For a partner, the partner id its events are recorded under.
    pub partner_id: Option<String>,
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path} is not a valid fundflow config: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A principal's entry breaks a rule.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// Which entry and which rule.
        message: String,
    },
}

/// The config file's shape.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessFile {
    /// Partner institutions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<PartnerEntry>,
    /// Finance reviewers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviewers: Vec<ReaderEntry>,
    /// Auditors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auditors: Vec<ReaderEntry>,
    /// NATS users besides the partners' and auditors' own (`[nats]`).
    #[serde(default, skip_serializing_if = "NatsEntry::is_empty")]
    pub nats: NatsEntry,
}

/// `[nats]`: the service's NATS users, for `fundflow nats-config`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsEntry {
    /// Public NKeys (`U...`) of the gateways and projectors: the only users that may publish on
    /// the stream's subjects.
    #[serde(default)]
    pub service_nkeys: Vec<String>,
}

impl NatsEntry {
    fn is_empty(&self) -> bool {
        self.service_nkeys.is_empty()
    }
}

/// `[[partners]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerEntry {
    /// The partner id, `[a-z0-9][a-z0-9-]{0,63}`.
    pub id: String,
    /// The institution's name.
    pub name: String,
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    /// The public NKey (`U...`) of the partner's NATS user, if it submits over NATS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_nkey: Option<String>,
}

/// `[[reviewers]]` and `[[auditors]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderEntry {
    /// The person's or team's name.
    pub name: String,
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    /// An auditor's public NKey (`U...`), for reading the stream over NATS; reviewers read over
    /// HTTP and have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_nkey: Option<String>,
}

impl AccessFile {
    /// The file's text, as [`AccessFile::read`] reads it back: TOML written by a serializer, so
    /// a name with a quote or a newline in it stays one string.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Reads and parses a config file, without checking its entries.
    pub fn read(path: &Path) -> Result<AccessFile, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: shown,
            message: err.message().to_owned(),
        })
    }
}

/// The principals a server knows, by token hash.
#[derive(Debug, Clone, Default)]
pub struct AccessControl {
    principals: Vec<([u8; 32], Principal)>,
}

impl AccessControl {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<AccessControl, ConfigError> {
        let file = AccessFile::read(path)?;
        AccessControl::from_file(file).map_err(|err| err.at(path))
    }

    /// Parses and checks a config text.
    pub fn parse(text: &str) -> Result<AccessControl, ConfigError> {
        let file: AccessFile = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: String::new(),
            message: err.message().to_owned(),
        })?;
        AccessControl::from_file(file)
    }

    /// Checks the entries of a parsed file.
    pub fn from_file(file: AccessFile) -> Result<AccessControl, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: String::new(),
            message,
        };
        check_nats_keys(&file)?;
        let mut principals = Vec::new();
        let entries = file
            .partners
            .into_iter()
            .map(|p| (Role::Partner, p.name, Some(p.id), p.token_sha256))
            .chain(
                file.reviewers
                    .into_iter()
                    .map(|r| (Role::Reviewer, r.name, None, r.token_sha256)),
            )
            .chain(
                file.auditors
                    .into_iter()
                    .map(|a| (Role::Auditor, a.name, None, a.token_sha256)),
            );
        for (role, name, partner_id, token_sha256) in entries {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(token_sha256.trim(), &mut hash).map_err(|_| {
                invalid(format!(
                    "{} {name:?}: token_sha256 must be 64 hex digits (the SHA-256 of the token, as `fundflow token new` prints it)",
                    role.as_str()
                ))
            })?;
            if let Some(id) = &partner_id
                && !fundflow_domain::wire::is_valid_partner_id(id)
            {
                return Err(invalid(format!(
                    "partner {name:?}: id {id:?} does not match [a-z0-9][a-z0-9-]{{0,63}}"
                )));
            }
            if principals.iter().any(|(h, _)| *h == hash) {
                return Err(invalid(format!(
                    "{} {name:?}: its token hash is already given to another principal",
                    role.as_str()
                )));
            }
            principals.push((
                hash,
                Principal {
                    role,
                    name,
                    partner_id,
                },
            ));
        }
        Ok(AccessControl { principals })
    }

    /// The principal whose token this is. Every known hash is compared, in constant time, so
    /// that the time taken says nothing about how close a guess came.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, principal) in &self.principals {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.principals.len()
    }

    /// Whether no principal is configured (every request is then refused).
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty()
    }

    /// The partner principals' ids.
    pub fn partner_ids(&self) -> impl Iterator<Item = &str> {
        self.principals
            .iter()
            .filter_map(|(_, p)| p.partner_id.as_deref())
    }
}

impl ConfigError {
    /// The same error, naming the file it is about.
    pub fn at(self, path: &Path) -> ConfigError {
        let path = path.display().to_string();
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path, message },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid { path, message },
            other => other,
        }
    }
}

/// Every NKey in the file is a user's public key, given to one principal only, and no reviewer
/// has one.
fn check_nats_keys(file: &AccessFile) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: String::new(),
        message,
    };
    if let Some(reviewer) = file.reviewers.iter().find(|r| r.nats_nkey.is_some()) {
        return Err(invalid(format!(
            "reviewer {:?}: reviewers read over HTTP and have no NATS user; remove nats_nkey",
            reviewer.name
        )));
    }
    let keys = file
        .partners
        .iter()
        .filter_map(|p| Some((format!("partner {:?}", p.id), p.nats_nkey.as_deref()?)))
        .chain(
            file.auditors
                .iter()
                .filter_map(|a| Some((format!("auditor {:?}", a.name), a.nats_nkey.as_deref()?))),
        )
        .chain(
            file.nats
                .service_nkeys
                .iter()
                .map(|k| ("[nats] service_nkeys".to_owned(), k.as_str())),
        );
    let mut seen = std::collections::BTreeMap::new();
    for (who, key) in keys {
        if !is_user_public_key(key) {
            return Err(invalid(format!(
                "{who}: {key:?} is not a NATS user's public NKey (56 characters starting with U, as `fundflow nkey new` prints it)"
            )));
        }
        if let Some(first) = seen.insert(key, who.clone()) {
            return Err(invalid(format!(
                "{who}: its NATS NKey is already given to {first}"
            )));
        }
    }
    Ok(())
}

/// Whether `key` is a NATS user's public NKey.
pub fn is_user_public_key(key: &str) -> bool {
    key.starts_with('U') && nkeys::KeyPair::from_public_key(key).is_ok()
}

/// A fresh NATS user NKey: the seed (a secret, for the user's seed file) and the public key (for
/// the config).
pub fn new_nkey() -> Result<(String, String), nkeys::error::Error> {
    let pair = nkeys::KeyPair::new_user();
    Ok((pair.seed()?, pair.public_key()))
}

/// A fresh random bearer token and the hex SHA-256 to put in the config.
pub fn new_token() -> Result<(String, String), getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let token = format!("fft_{}", hex::encode(secret));
    let hash = token_sha256(&token);
    Ok((token, hash))
}

/// The hex SHA-256 of a token, as the config stores it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_its_principal_and_nothing_else() {
        let (token, hash) = new_token().unwrap();
        let (other, other_hash) = new_token().unwrap();
        let config = format!(
            "[[partners]]\nid = \"icshp\"\nname = \"ICSHP\"\ntoken_sha256 = \"{hash}\"\n\
             [[auditors]]\nname = \"Audit\"\ntoken_sha256 = \"{other_hash}\"\n"
        );
        let access = AccessControl::parse(&config).unwrap();
        let partner = access.authenticate(&token).unwrap();
        assert_eq!(partner.role, Role::Partner);
        assert_eq!(partner.partner_id.as_deref(), Some("icshp"));
        assert_eq!(access.authenticate(&other).unwrap().role, Role::Auditor);
        assert!(access.authenticate("fft_wrong").is_none());
        assert!(
            access.authenticate(&hash).is_none(),
            "the hash is not a token"
        );
    }

    #[test]
    fn bad_entries_are_refused_with_the_rule() {
        let bad_hash = "[[reviewers]]\nname = \"R\"\ntoken_sha256 = \"abc\"\n";
        let err = AccessControl::parse(bad_hash).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let bad_id = format!(
            "[[partners]]\nid = \"Not Valid\"\nname = \"P\"\ntoken_sha256 = \"{}\"\n",
            "0".repeat(64)
        );
        let err = AccessControl::parse(&bad_id).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let unknown = "[[partners]]\nid = \"a\"\nname = \"P\"\ntoken = \"x\"\n";
        let err = AccessControl::parse(unknown).unwrap_err().to_string();
        assert!(err.contains("token"), "{err}");
        let same = format!(
            "[[reviewers]]\nname = \"A\"\ntoken_sha256 = \"{0}\"\n[[auditors]]\nname = \"B\"\ntoken_sha256 = \"{0}\"\n",
            "1".repeat(64)
        );
        let err = AccessControl::parse(&same).unwrap_err().to_string();
        assert!(err.contains("already given"), "{err}");
    }
}
