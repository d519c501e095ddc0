//! The entitlements file (format documented at the top of `nats/entitlements.toml`): every
//! identity, its public NKey, role and trading accounts. Pure: parsing text; reading the file
//! is [`load`]'s one I/O. Held to the shared vector `schemas/testdata/entitlements.toml`, which
//! the Python loader (`bridge/security/entitlements.py`) is held to as well.
//!
//! The engine takes only resolved files: a `dev:<name>` key (the committed dev file's
//! reference to a key the dev tooling generates) is refused with the file to use instead.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::contract;
use crate::validate::{valid_id, MAX_ACCOUNT_BYTES, RESERVED_ACCOUNT_PREFIX};

/// The only format version.
pub const FORMAT_VERSION: i64 = 1;
/// `nkey = "dev:<name>"`: a dev-generated key, resolved by the dev tooling before use.
pub const DEV_KEY_PREFIX: &str = "dev:";

/// An identity's role (see `nats/entitlements.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Orchestrator,
    Operator,
    Engine,
    Sentinel,
    System,
    /// An operator's identity in the server's system account (cluster diagnostics, peer-remove).
    Sysadmin,
}

impl Role {
    /// Roles that sign order operations and are entitled to accounts.
    pub fn trades(self) -> bool {
        matches!(self, Role::Orchestrator | Role::Operator)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Orchestrator => "orchestrator",
            Role::Operator => "operator",
            Role::Engine => "engine",
            Role::Sentinel => "sentinel",
            Role::System => "system",
            Role::Sysadmin => "sysadmin",
        }
    }
}

/// One identity of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    pub nkey: String,
    pub certificate_subject: String,
    pub accounts: Vec<String>,
}

impl Identity {
    /// May this identity trade and read `account`? Reserved (`_...`) and malformed accounts:
    /// never; `"*"` is every other account.
    pub fn entitled(&self, account: &str) -> bool {
        self.role.trades()
            && valid_account(account)
            && self
                .accounts
                .iter()
                .any(|a| a == contract::ALL_ACCOUNTS || a == account)
    }
}

/// A trading account as the contract defines it (`ACCOUNT_PATTERN`): an id of at most
/// `MAX_ACCOUNT_BYTES` that does not start with the reserved prefix.
pub fn valid_account(account: &str) -> bool {
    valid_id(account, MAX_ACCOUNT_BYTES) && !account.starts_with(RESERVED_ACCOUNT_PREFIX)
}

/// A whole entitlements file, indexed by public key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entitlements {
    identities: Vec<Identity>,
    by_nkey: HashMap<String, usize>,
}

impl Entitlements {
    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// The identity with this public NKey, if any.
    pub fn by_nkey(&self, nkey: &str) -> Option<&Identity> {
        self.by_nkey.get(nkey).map(|&i| &self.identities[i])
    }

    /// Is the identity with key `nkey` entitled to `account`? (Unknown keys: no.)
    pub fn entitled(&self, nkey: &str, account: &str) -> bool {
        self.by_nkey(nkey).is_some_and(|i| i.entitled(account))
    }

    /// What changed from `self` to `new`, by identity name.
    pub fn changes(&self, new: &Entitlements) -> Changes {
        let old: BTreeMap<&str, &Identity> = self
            .identities
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        let now: BTreeMap<&str, &Identity> = new
            .identities
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        let names = |f: &dyn Fn(&str, &Identity) -> bool, of: &BTreeMap<&str, &Identity>| {
            of.iter()
                .filter(|(n, i)| f(n, i))
                .map(|(n, _)| n.to_string())
                .collect()
        };
        Changes {
            before: self.identities.len(),
            after: new.identities.len(),
            added: names(&|n, _| !old.contains_key(n), &now),
            removed: names(&|n, _| !now.contains_key(n), &old),
            changed: names(&|n, i| old.get(n).is_some_and(|o| *o != i), &now),
        }
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub before: usize,
    pub after: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

/// The file is unreadable or invalid. `field` names where (`identities.desk-a.accounts`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("entitlements {source_name}: {field}: {message}")]
pub struct EntitlementsError {
    pub source_name: String,
    pub field: String,
    pub message: String,
}

/// The file's top level. Other top-level keys (e.g. the shared vector's `[[expect]]`) are
/// ignored, as the Python loader does.
#[derive(Deserialize)]
struct RawFile {
    version: Option<toml::Value>,
    identities: Option<toml::Value>,
}

const FIELDS: [&str; 4] = ["role", "nkey", "certificate_subject", "accounts"];

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Entitlements, EntitlementsError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| EntitlementsError {
        source_name: source.clone(),
        field: "<file>".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &source)
}

/// Parses the text of an entitlements file; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Entitlements, EntitlementsError> {
    let err = |field: &str, message: String| EntitlementsError {
        source_name: source.into(),
        field: field.into(),
        message,
    };
    let raw: RawFile =
        toml::from_str(text).map_err(|e| err("<file>", format!("not valid TOML: {e}")))?;
    match raw.version.as_ref().and_then(toml::Value::as_integer) {
        Some(FORMAT_VERSION) => {}
        _ => {
            let got = raw.version.map_or("nothing".into(), |v| v.to_string());
            return Err(err(
                "version",
                format!("must be {FORMAT_VERSION}, got {got}"),
            ));
        }
    }
    let table = match raw.identities {
        Some(toml::Value::Table(t)) if !t.is_empty() => t,
        _ => {
            return Err(err(
                "identities",
                "at least one [identities.<name>] table".into(),
            ))
        }
    };
    let mut entitlements = Entitlements::default();
    for (name, body) in table {
        let at = format!("identities.{name}");
        if !valid_name(&name) {
            return Err(err(&at, "invalid identity name".into()));
        }
        let toml::Value::Table(body) = body else {
            return Err(err(&at, "must be a table".into()));
        };
        let identity = identity(name, &body).map_err(|(f, m)| err(&format!("{at}.{f}"), m))?;
        if let Some(&other) = entitlements.by_nkey.get(&identity.nkey) {
            let other = &entitlements.identities[other].name;
            return Err(err(
                &format!("{at}.nkey"),
                format!("same key as identity {other:?}"),
            ));
        }
        entitlements
            .by_nkey
            .insert(identity.nkey.clone(), entitlements.identities.len());
        entitlements.identities.push(identity);
    }
    Ok(entitlements)
}

/// One identity from its table; on error, the field and the message.
fn identity(name: String, body: &toml::Table) -> Result<Identity, (String, String)> {
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err((
            unknown.clone(),
            format!("unknown field; expected one of {}", FIELDS.join(", ")),
        ));
    }
    let role: Role = required(body, "role")?;
    let nkey: String = required(body, "nkey")?;
    let certificate_subject: String = required(body, "certificate_subject")?;
    let accounts: Vec<String> = field(body, "accounts")?.unwrap_or_default();
    let fail = |f: &str, m: String| Err((f.to_string(), m));
    if nkey.starts_with(DEV_KEY_PREFIX) {
        return fail(
            "nkey",
            format!(
                "{nkey:?} is a dev key reference: the engine takes a resolved file (the dev \
                 tooling writes one with every key, e.g. .dev/entitlements.toml)"
            ),
        );
    }
    if !is_user_nkey(&nkey) {
        return fail(
            "nkey",
            "not a public user NKey (U + 55 base32 chars)".into(),
        );
    }
    if certificate_subject.is_empty() {
        return fail("certificate_subject", "must not be empty".into());
    }
    if let Some(bad) = accounts
        .iter()
        .find(|a| a.as_str() != contract::ALL_ACCOUNTS && !valid_account(a))
    {
        return fail(
            "accounts",
            format!(
                "account {bad:?} is neither {:?} nor matches {} (accounts starting with '_' \
                 are the engine's)",
                contract::ALL_ACCOUNTS,
                contract::ACCOUNT_PATTERN
            ),
        );
    }
    if role.trades() && accounts.is_empty() {
        return fail(
            "accounts",
            format!("a {} needs at least one account", role.name()),
        );
    }
    if !role.trades() && !accounts.is_empty() {
        return fail("accounts", format!("a {} trades no account", role.name()));
    }
    Ok(Identity {
        name,
        role,
        nkey,
        certificate_subject,
        accounts,
    })
}

fn field<T: DeserializeOwned>(
    body: &toml::Table,
    key: &str,
) -> Result<Option<T>, (String, String)> {
    body.get(key)
        .map(|v| v.clone().try_into::<T>())
        .transpose()
        .map_err(|e| (key.to_string(), e.message().trim().to_string()))
}

fn required<T: DeserializeOwned>(body: &toml::Table, key: &str) -> Result<T, (String, String)> {
    field(body, key)?.ok_or_else(|| (key.to_string(), "missing".into()))
}

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`
fn valid_name(name: &str) -> bool {
    valid_id(name, 64) && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// `^U[A-Z2-7]{55}$`: the text form of a public user NKey.
pub fn is_user_nkey(nkey: &str) -> bool {
    nkey.len() == 56
        && nkey.starts_with('U')
        && nkey
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}
