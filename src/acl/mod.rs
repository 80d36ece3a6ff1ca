//! Users and what they may do (Redis's ACL): which commands, keys and
//! channels, with hashed passwords, a log of refusals and an ACL file.
//!
//! The command layer describes its commands once, as a [`Catalogue`] of
//! commands and subcommands with their categories; rules and checks work
//! on catalogue ids, so this module knows nothing about what a command
//! does.

mod user;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

pub use user::{hash_password, Access, Denied, User};

use crate::storage::now_ms;

/// Command categories, in ACL CAT's order.
pub const CATEGORIES: [&str; 21] = [
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// The bit of category `name` (lower-case), if there is one.
pub fn category_bit(name: &str) -> Option<u32> {
    CATEGORIES.iter().position(|c| *c == name).map(|i| 1 << i)
}

/// The categories in `bits`, by name.
pub fn category_names(bits: u32) -> impl Iterator<Item = &'static str> {
    CATEGORIES
        .iter()
        .enumerate()
        .filter(move |(i, _)| bits & (1 << i) != 0)
        .map(|(_, c)| *c)
}

/// Every command and subcommand rules can name, with its categories.
/// Commands come first, in the order they were added, so a command's
/// place in the command table can be its id here.
#[derive(Debug, Default)]
pub struct Catalogue {
    names: Vec<String>,
    categories: Vec<u32>,
    parent: Vec<Option<usize>>,
    subs: Vec<Vec<usize>>,
    by_name: HashMap<String, usize>,
}

impl Catalogue {
    /// Adds a command (lower-case name) and returns its id.
    pub fn add(&mut self, name: &str, categories: u32) -> usize {
        self.push(name.to_string(), categories, None)
    }

    /// Adds subcommand `sub` of command `parent`: `parent|sub`.
    pub fn add_sub(&mut self, parent: usize, sub: &str, categories: u32) -> usize {
        let name = format!("{}|{sub}", self.names[parent]);
        let id = self.push(name, categories, Some(parent));
        self.subs[parent].push(id);
        id
    }

    fn push(&mut self, name: String, categories: u32, parent: Option<usize>) -> usize {
        let id = self.names.len();
        self.by_name.insert(name.clone(), id);
        self.names.push(name);
        self.categories.push(categories);
        self.parent.push(parent);
        self.subs.push(Vec::new());
        id
    }

    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The id of `name` (`get`, `client|kill`), lower-case.
    pub fn id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The id of subcommand `sub` (any case) of command `cmd`.
    pub fn sub_id(&self, cmd: usize, sub: &[u8]) -> Option<usize> {
        let prefix = self.names[cmd].len() + 1;
        self.subs[cmd]
            .iter()
            .copied()
            .find(|&s| self.names[s].as_bytes()[prefix..].eq_ignore_ascii_case(sub))
    }

    /// The name of `id`.
    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    /// The category bits of `id`.
    pub fn categories(&self, id: usize) -> u32 {
        self.categories[id]
    }

    /// The subcommands of `id`.
    pub fn subcommands(&self, id: usize) -> &[usize] {
        &self.subs[id]
    }

    /// Whether `id` is a subcommand.
    pub fn is_subcommand(&self, id: usize) -> bool {
        self.parent[id].is_some()
    }
}

/// Why an entry is in the ACL log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A command the user may not run.
    Command,
    /// A key the user may not touch.
    Key,
    /// A channel the user may not use.
    Channel,
    /// A failed AUTH.
    Auth,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Command => "command",
            Reason::Key => "key",
            Reason::Channel => "channel",
            Reason::Auth => "auth",
        }
    }
}

/// One ACL LOG entry; repeats within a minute are counted on one entry.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Times it happened.
    pub count: u64,
    /// `command`, `key`, `channel` or `auth`.
    pub reason: &'static str,
    /// `toplevel`, `multi` or `lua`.
    pub context: &'static str,
    /// The command, key or channel refused (`AUTH` for logins).
    pub object: String,
    /// Who tried.
    pub username: String,
    /// The client, as CLIENT INFO describes it.
    pub client_info: String,
    /// Unique, increasing id.
    pub entry_id: u64,
    /// First time, Unix ms.
    pub created_ms: u64,
    /// Last time, Unix ms.
    pub updated_ms: u64,
}

/// An ACL error with a reason fit for the client.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// A rule could not be applied.
    #[error("{0}")]
    Rule(String),
    /// The ACL file can't be read or holds an error.
    #[error("{0}")]
    File(String),
}

/// The users of a node, the ACL log and the ACL file.
pub struct Acl {
    catalogue: Arc<Catalogue>,
    users: RwLock<BTreeMap<String, Arc<User>>>,
    generation: AtomicU64,
    log: Mutex<VecDeque<LogEntry>>,
    next_entry: AtomicU64,
    file: PathBuf,
    /// Serialises writes of the ACL file.
    saving: Mutex<()>,
}

/// The `default` user when nothing else is said: everything, no password.
const DEFAULT_RULES: [&str; 5] = ["on", "nopass", "~*", "&*", "+@all"];

impl Acl {
    /// Loads the users from `file` (a missing file means only `default`),
    /// then gives `default` the password `requirepass` if one is set.
    pub fn open(
        catalogue: Arc<Catalogue>,
        file: PathBuf,
        requirepass: Option<&str>,
    ) -> Result<Acl, AclError> {
        let users = load_file(&catalogue, &file)?;
        let acl = Acl {
            catalogue,
            users: RwLock::new(users),
            generation: AtomicU64::new(1),
            log: Mutex::new(VecDeque::new()),
            next_entry: AtomicU64::new(0),
            file,
            saving: Mutex::new(()),
        };
        if let Some(p) = requirepass {
            acl.set_default_password(Some(p))?;
        }
        Ok(acl)
    }

    /// The commands rules can name.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Changes whenever any user changes; sessions refresh their user
    /// when it moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }

    /// Whether a new connection is logged in as `default` without AUTH.
    pub fn default_open(&self) -> bool {
        self.user("default").is_some_and(|u| u.enabled && u.nopass)
    }

    /// The user that `name` (or `default`) and `pass` log in as.
    pub fn authenticate(&self, name: &str, pass: &[u8]) -> Option<Arc<User>> {
        self.user(name).filter(|u| u.password_ok(pass))
    }

    /// ACL SETUSER: creates `name` if needed and applies `rules`, all or
    /// nothing.
    pub fn set_user<S: AsRef<str>>(&self, name: &str, rules: &[S]) -> Result<(), AclError> {
        if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
            return Err(AclError::Rule(
                "Usernames can't contain spaces or null characters".into(),
            ));
        }
        {
            let mut users = self.users.write();
            let mut u = match users.get(name) {
                Some(u) => (**u).clone(),
                None => User::new(name, &self.catalogue),
            };
            u.apply_all(rules, &self.catalogue)
                .map_err(AclError::Rule)?;
            users.insert(name.to_string(), Arc::new(u));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.persist();
        Ok(())
    }

    /// ACL DELUSER: removes the users named; returns how many existed.
    pub fn delete_users(&self, names: &[String]) -> Result<usize, AclError> {
        if names.iter().any(|n| n == "default") {
            return Err(AclError::Rule(
                "The 'default' user cannot be removed".into(),
            ));
        }
        let n = {
            let mut users = self.users.write();
            let n = names.iter().filter(|n| users.remove(*n).is_some()).count();
            self.generation.fetch_add(1, Ordering::AcqRel);
            n
        };
        if n > 0 {
            self.persist();
        }
        Ok(n)
    }

    /// `requirepass`: `default`'s only password, or none (`nopass`).
    pub fn set_default_password(&self, pass: Option<&str>) -> Result<(), AclError> {
        let rules = match pass {
            Some(p) => vec!["resetpass".to_string(), format!(">{p}")],
            None => vec!["nopass".to_string()],
        };
        self.set_user("default", &rules)
    }

    /// Where the ACL file is.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// ACL SAVE: writes every user to the ACL file (a new file renamed
    /// over the old one, so a crash leaves one or the other).
    pub fn save(&self) -> Result<(), AclError> {
        let _one = self.saving.lock();
        let mut text = String::new();
        for u in self.users() {
            text.push_str(&format!("user {} {}\n", u.name, u.describe()));
        }
        let tmp = self.file.with_extension("acl.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.file)?;
            if let Some(dir) = self.file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            AclError::File(format!(
                "There was an error trying to save the ACLs. Please check the server logs for more information ({}: {e})",
                self.file.display()
            ))
        })
    }

    /// ACL changes are written through at once, so a restart keeps them.
    fn persist(&self) {
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "saving the ACL file failed");
        }
    }

    /// ACL LOAD: replaces every user with the ACL file's, or changes
    /// nothing if the file has an error.
    pub fn load(&self) -> Result<(), AclError> {
        let users = load_file(&self.catalogue, &self.file)?;
        *self.users.write() = users;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Records a refusal; repeats within a minute add to one entry.
    #[allow(clippy::too_many_arguments)]
    pub fn log(
        &self,
        reason: Reason,
        context: &'static str,
        object: String,
        username: String,
        client_info: String,
        max_len: usize,
    ) {
        let now = now_ms();
        let reason = reason.as_str();
        let mut log = self.log.lock();
        if let Some(pos) = log.iter().position(|e| {
            e.reason == reason
                && e.context == context
                && e.object == object
                && e.username == username
                && now.saturating_sub(e.updated_ms) < 60_000
        }) {
            let Some(mut e) = log.remove(pos) else {
                return;
            };
            e.count += 1;
            e.updated_ms = now;
            e.client_info = client_info;
            log.push_front(e);
            return;
        }
        log.push_front(LogEntry {
            count: 1,
            reason,
            context,
            object,
            username,
            client_info,
            entry_id: self.next_entry.fetch_add(1, Ordering::Relaxed),
            created_ms: now,
            updated_ms: now,
        });
        log.truncate(max_len);
    }

    /// The newest `n` log entries.
    pub fn log_entries(&self, n: usize) -> Vec<LogEntry> {
        self.log.lock().iter().take(n).cloned().collect()
    }

    /// ACL LOG RESET.
    pub fn reset_log(&self) {
        self.log.lock().clear();
    }
}

/// Reads an ACL file: one `user <name> <rules...>` per line; blank lines
/// and `#` comments are skipped. `default` is added if the file lacks it.
fn load_file(cat: &Catalogue, path: &Path) -> Result<BTreeMap<String, Arc<User>>, AclError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(AclError::File(format!(
                "Error loading ACLs, opening file '{}': {e}",
                path.display()
            )))
        }
    };
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |msg: String| AclError::File(format!("{}:{}: {msg}", path.display(), i + 1));
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        if words.len() < 2 || words[0] != "user" {
            return Err(at("line should start with user keyword".into()));
        }
        let name = words[1];
        if users.contains_key(name) {
            return Err(at(format!("Duplicate user '{name}' found")));
        }
        let mut u = User::new(name, cat);
        u.apply_all(&words[2..], cat).map_err(at)?;
        users.insert(name.to_string(), Arc::new(u));
    }
    if !users.contains_key("default") {
        let mut u = User::new("default", cat);
        u.apply_all(&DEFAULT_RULES, cat)
            .map_err(|e| AclError::File(format!("the default user: {e}")))?;
        users.insert("default".to_string(), Arc::new(u));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Catalogue {
        let mut c = Catalogue::default();
        let read = category_bit("read").unwrap_or(0);
        let write = category_bit("write").unwrap_or(0);
        let admin = category_bit("admin").unwrap_or(0);
        c.add("get", read);
        c.add("set", write);
        c.add("select", 0);
        let client = c.add("client", 0);
        c.add_sub(client, "setname", 0);
        c.add_sub(client, "kill", admin);
        c
    }

    fn access(
        cat: &Catalogue,
        name: &str,
        keys: &[(&'static [u8], bool, bool)],
    ) -> Access<'static> {
        Access {
            command: cat.id(name).unwrap_or(usize::MAX),
            keys: keys.to_vec(),
            ..Access::default()
        }
    }

    #[test]
    fn rules_grant_and_describe() {
        let cat = catalogue();
        let mut u = User::new("alice", &cat);
        u.apply_all(
            &[
                "on",
                ">pw",
                "~app:*",
                "%R~ro:*",
                "+@read",
                "+client|setname",
            ],
            &cat,
        )
        .unwrap();
        assert!(u.password_ok(b"pw"));
        assert!(!u.password_ok(b"other"));
        assert!(u
            .check(&access(&cat, "get", &[(b"app:1", true, false)]))
            .is_ok());
        assert!(u
            .check(&access(&cat, "get", &[(b"ro:1", true, false)]))
            .is_ok());
        assert_eq!(
            u.check(&access(&cat, "get", &[(b"other", true, false)])),
            Err(Denied::Key(b"other".to_vec()))
        );
        assert_eq!(
            u.check(&access(&cat, "set", &[(b"app:1", false, true)])),
            Err(Denied::Command)
        );
        assert!(u.check(&access(&cat, "client|setname", &[])).is_ok());
        assert_eq!(
            u.check(&access(&cat, "client|kill", &[])),
            Err(Denied::Command)
        );
        let d = u.describe();
        assert!(d.starts_with("on sanitize-payload #"), "{d}");
        assert!(
            d.ends_with("~app:* %R~ro:* resetchannels -@all +@read +client|setname"),
            "{d}"
        );
        // The description rebuilds the same user.
        let words: Vec<&str> = d.split(' ').collect();
        let mut again = User::new("alice", &cat);
        again.apply_all(&words, &cat).unwrap();
        assert_eq!(again.describe(), d);
    }

    #[test]
    fn selectors_and_first_args() {
        let cat = catalogue();
        let mut u = User::new("bob", &cat);
        u.apply_all(
            &["on", "nopass", "+get", "~a*", "(+set", "~b*)", "+select|0"],
            &cat,
        )
        .unwrap();
        assert!(u
            .check(&access(&cat, "set", &[(b"b1", false, true)]))
            .is_ok());
        assert_eq!(
            u.check(&access(&cat, "set", &[(b"a1", false, true)])),
            Err(Denied::Command)
        );
        let mut sel = access(&cat, "select", &[]);
        sel.first_arg = Some(b"0");
        assert!(u.check(&sel).is_ok());
        sel.first_arg = Some(b"1");
        assert_eq!(u.check(&sel), Err(Denied::Command));
    }

    #[test]
    fn bad_rules_are_named() {
        let cat = catalogue();
        let mut u = User::new("c", &cat);
        let e = u.apply_all(&["+nosuch"], &cat).unwrap_err();
        assert_eq!(
            e,
            "Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL"
        );
        assert!(u.apply_all(&["#abc"], &cat).is_err());
        assert!(u
            .apply_all(&["(+get"], &cat)
            .unwrap_err()
            .contains("Unmatched parenthesis"));
    }

    #[test]
    fn file_round_trip_and_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.acl");
        let cat = Arc::new(catalogue());
        let acl = Acl::open(cat.clone(), path.clone(), None).unwrap();
        assert!(acl.default_open());
        acl.set_user("alice", &["on", ">secret", "~k*", "+get"])
            .unwrap();
        let again = Acl::open(cat.clone(), path.clone(), Some("pw")).unwrap();
        assert!(again.authenticate("alice", b"secret").is_some());
        assert!(!again.default_open());
        assert!(again.authenticate("default", b"pw").is_some());
        std::fs::write(&path, "user alice on +nosuch\n").unwrap();
        let e = again.load().unwrap_err().to_string();
        assert!(
            e.contains(":1: Error in ACL SETUSER modifier '+nosuch'"),
            "{e}"
        );
        assert!(again.user("alice").is_some(), "a bad file changes nothing");
    }
}
