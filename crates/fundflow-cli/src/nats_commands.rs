//! The access config's commands: `token new` (an HTTP principal's token), `nkey new` and
//! `nats-config` (the NATS users of a deployment, kept in the same access config as the HTTP
//! principals so that the two never drift).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use fundflow_server::access::{AccessFile, new_nkey};
use fundflow_server::nats_auth;

/// `fundflow nkey new`: a fresh user seed in a new 0600 file, and the lines to paste.
pub fn nkey_new(seed_file: &Path, role: &str) -> anyhow::Result<()> {
    let paste = match role {
        "service" => "[nats]\nservice_nkeys = [\"{key}\"]",
        "partner" | "auditor" => "nats_nkey = \"{key}\"",
        other => anyhow::bail!("role {other:?} is not service, partner or auditor"),
    };
    let (seed, public) = new_nkey().map_err(|err| anyhow::anyhow!("cannot make an NKey: {err}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(seed_file).with_context(|| {
        format!(
            "cannot create the seed file {} (an existing one is never overwritten)",
            seed_file.display()
        )
    })?;
    if let Err(err) = file
        .write_all(format!("{seed}\n").as_bytes())
        .and_then(|()| file.sync_all())
    {
        // An empty or partial seed file would block the next attempt (nothing is overwritten).
        let _ = std::fs::remove_file(seed_file);
        return Err(err).with_context(|| format!("cannot write {}", seed_file.display()));
    }
    let where_ = match role {
        "service" => "the access config".to_owned(),
        _ => format!("the {role}'s entry in the access config"),
    };
    println!(
        "seed written to {} (give it to the {role}'s process only: it is the user's secret)\n",
        seed_file.display()
    );
    println!("public key: {public}\n");
    println!(
        "config line (paste into {where_}, then run fundflow nats-config):\n{}",
        paste.replace("{key}", &public)
    );
    Ok(())
}

/// `fundflow nats-config`: the `authorization` block for nats-server.
pub fn nats_config(config: &Path, stream: &str, out: Option<&Path>) -> anyhow::Result<()> {
    let file = AccessFile::read(config)?;
    let users = nats_auth::nats_users(&file, stream).map_err(|err| match err {
        nats_auth::NatsUsersError::Config(err) => anyhow::Error::from(err.at(config)),
        err @ nats_auth::NatsUsersError::StreamName(_) => anyhow::anyhow!("--stream: {err}"),
    })?;
    if file.nats.service_nkeys.is_empty() {
        eprintln!(
            "fundflow: warning: {} has no [nats] service_nkeys: no gateway or projector will be able to connect",
            config.display()
        );
    }
    let text = nats_auth::authorization_block(&users, &config.display().to_string());
    let Some(out) = out else {
        print!("{text}");
        return Ok(());
    };
    // Written next to its destination and renamed over it, so a server reloading its config
    // never reads half a file.
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    // Public keys and permissions only: the nats-server user must be able to read it.
    #[cfg(unix)]
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("cannot set the mode of {}", temp.path().display()))?;
    temp.write_all(text.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    temp.persist(out)
        .with_context(|| format!("cannot replace {}", out.display()))?;
    let partners = file
        .partners
        .iter()
        .filter(|p| p.nats_nkey.is_some())
        .count();
    let auditors = file
        .auditors
        .iter()
        .filter(|a| a.nats_nkey.is_some())
        .count();
    eprintln!(
        "wrote {} NATS users ({} service, {partners} partners, {auditors} auditors) to {}; apply with nats-server --signal reload",
        users.len(),
        file.nats.service_nkeys.len(),
        out.display()
    );
    Ok(())
}

/// `fundflow token new`: a fresh token and the config lines that hold its hash.
pub fn token_new(role: &str, name: &str, id: Option<&str>) -> anyhow::Result<()> {
    let (token, hash) = fundflow_server::access::new_token()
        .map_err(|err| anyhow::anyhow!("cannot draw a random token: {err}"))?;
    use fundflow_server::access::{AccessFile, PartnerEntry, ReaderEntry};
    let name = if name.is_empty() { "(name)" } else { name }.to_owned();
    let reader = || ReaderEntry {
        name: name.clone(),
        token_sha256: hash.clone(),
        nats_nkey: None,
    };
    let mut entry = AccessFile::default();
    match (role, id) {
        ("partner", Some(id)) => entry.partners.push(PartnerEntry {
            id: id.to_owned(),
            name: name.clone(),
            token_sha256: hash.clone(),
            nats_nkey: None,
        }),
        ("partner", None) => anyhow::bail!("a partner token needs --id <partner_id>"),
        ("reviewer", _) => entry.reviewers.push(reader()),
        ("auditor", _) => entry.auditors.push(reader()),
        (other, _) => anyhow::bail!("role {other:?} is not partner, reviewer or auditor"),
    }
    let entry = entry.to_toml()?;
    println!("token (give it to its holder, keep it nowhere else):\n  {token}\n");
    println!(
        "config lines (paste into the --config file):\n{}",
        entry.trim_end()
    );
    Ok(())
}
