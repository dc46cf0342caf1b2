//! An access config for a test, written as an operator writes one (the TOML that
//! `fundflow token new` prints), by a serializer: a name with a quote or a newline stays one
//! string. The server's own reader (`fundflow_server::access`) checks what this writes.

use std::path::Path;

use serde::Serialize;

/// The file, built entry by entry.
#[derive(Debug, Default, Serialize)]
pub struct AccessConfig {
    #[serde(skip_serializing_if = "Nats::is_empty")]
    nats: Nats,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partners: Vec<Partner>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reviewers: Vec<Reader>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    auditors: Vec<Reader>,
}

#[derive(Debug, Default, Serialize)]
struct Nats {
    service_nkeys: Vec<String>,
}

impl Nats {
    fn is_empty(&self) -> bool {
        self.service_nkeys.is_empty()
    }
}

#[derive(Debug, Serialize)]
struct Partner {
    id: String,
    name: String,
    token_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_nkey: Option<String>,
}

#[derive(Debug, Serialize)]
struct Reader {
    name: String,
    token_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_nkey: Option<String>,
}

impl AccessConfig {
    /// An empty config.
    pub fn new() -> AccessConfig {
        AccessConfig::default()
    }

    /// A partner with a token hash, and a NATS user's public key if it submits over NATS.
    pub fn partner(
        mut self,
        id: &str,
        name: &str,
        token_sha256: &str,
        nats_nkey: Option<&str>,
    ) -> AccessConfig {
        self.partners.push(Partner {
            id: id.to_owned(),
            name: name.to_owned(),
            token_sha256: token_sha256.to_owned(),
            nats_nkey: nats_nkey.map(str::to_owned),
        });
        self
    }

    /// A finance reviewer.
    pub fn reviewer(mut self, name: &str, token_sha256: &str) -> AccessConfig {
        self.reviewers.push(Reader {
            name: name.to_owned(),
            token_sha256: token_sha256.to_owned(),
            nats_nkey: None,
        });
        self
    }

    /// An auditor, with a NATS user's public key if it reads the stream over NATS.
    pub fn auditor(
        mut self,
        name: &str,
        token_sha256: &str,
        nats_nkey: Option<&str>,
    ) -> AccessConfig {
        self.auditors.push(Reader {
            name: name.to_owned(),
            token_sha256: token_sha256.to_owned(),
            nats_nkey: nats_nkey.map(str::to_owned),
        });
        self
    }

    /// A service (gateway, projector) NATS user's public key.
    pub fn service_nkey(mut self, key: &str) -> AccessConfig {
        self.nats.service_nkeys.push(key.to_owned());
        self
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| panic!("an access config serializes: {e}"))
    }

    /// Writes the TOML to `path`. Panics on failure: this is test setup.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_toml())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_quotes_and_newlines_stay_one_string() {
        let text = AccessConfig::new()
            .partner("acme", "ACME \"Quoted\"\nInc", &"0".repeat(64), None)
            .reviewer("R", &"1".repeat(64))
            .to_toml();
        let parsed: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let partner = &parsed["partners"][0];
        assert_eq!(partner["name"].as_str(), Some("ACME \"Quoted\"\nInc"));
        assert_eq!(partner.get("nats_nkey"), None);
        assert!(parsed.get("nats").is_none(), "{text}");
    }
}
