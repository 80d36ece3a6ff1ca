//! One user: its switches, passwords and selectors, built from Redis's ACL
//! rules and described back in the same words.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::{category_bit, Catalogue};
use crate::storage::glob_match;

/// What a command is about to touch, for a permission check.
#[derive(Debug, Default)]
pub struct Access<'a> {
    /// The catalogue id of the command, or of its subcommand.
    pub command: usize,
    /// The first argument, for `+cmd|arg` rules on commands without
    /// subcommands (`+select|0`).
    pub first_arg: Option<&'a [u8]>,
    /// Keys, each with whether it is read and whether it is written.
    pub keys: Vec<(&'a [u8], bool, bool)>,
    /// Channels named literally (PUBLISH, SUBSCRIBE).
    pub channels: Vec<&'a [u8]>,
    /// Channel patterns (PSUBSCRIBE): allowed only as written in a rule.
    pub patterns: Vec<&'a [u8]>,
}

/// Why a check failed: the first thing the user may not touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The command itself.
    Command,
    /// This key.
    Key(Vec<u8>),
    /// This channel or pattern.
    Channel(Vec<u8>),
}

/// A key pattern and what it grants: `~p` both, `%R~p` reads, `%W~p` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    pattern: Vec<u8>,
    read: bool,
    write: bool,
}

impl KeyPattern {
    fn describe(&self) -> String {
        let p = String::from_utf8_lossy(&self.pattern);
        match (self.read, self.write) {
            (true, true) => format!("~{p}"),
            (true, false) => format!("%R~{p}"),
            _ => format!("%W~{p}"),
        }
    }
}

/// One set of permissions: commands, keys and channels. A user has a root
/// selector and any number of `(...)` selectors; a command runs when one
/// of them allows all of it.
#[derive(Debug, Clone)]
pub struct Selector {
    /// One bit per catalogue id.
    allowed: Vec<u64>,
    /// `+cmd|arg` grants for commands without subcommands.
    first_args: HashMap<usize, Vec<Vec<u8>>>,
    /// Whether the command rules start from `+@all` (else `-@all`).
    from_all: bool,
    /// The command rules after that start, as given (for ACL LIST).
    rules: Vec<String>,
    keys: Vec<KeyPattern>,
    channels: Vec<Vec<u8>>,
    all_channels: bool,
}

impl Selector {
    /// Nothing allowed.
    fn empty(cat: &Catalogue) -> Selector {
        Selector {
            allowed: vec![0; cat.len().div_ceil(64)],
            first_args: HashMap::new(),
            from_all: false,
            rules: Vec::new(),
            keys: Vec::new(),
            channels: Vec::new(),
            all_channels: false,
        }
    }

    fn set(&mut self, id: usize, on: bool) {
        let (w, b) = (id / 64, 1u64 << (id % 64));
        if on {
            self.allowed[w] |= b;
        } else {
            self.allowed[w] &= !b;
        }
    }

    fn get(&self, id: usize) -> bool {
        self.allowed[id / 64] & (1u64 << (id % 64)) != 0
    }

    fn all_commands(&self, cat: &Catalogue) -> bool {
        (0..cat.len()).all(|id| self.get(id))
    }

    fn all_keys(&self) -> bool {
        self.keys
            .iter()
            .any(|k| k.read && k.write && k.pattern == b"*")
    }

    /// Applies one rule that belongs to a selector. `Ok(false)` means the
    /// rule is not a selector rule (a user-level one, or unknown).
    fn apply(&mut self, rule: &str, cat: &Catalogue) -> Result<bool, String> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "allkeys" => return self.apply("~*", cat),
            "resetkeys" => self.keys.clear(),
            "allchannels" => {
                self.all_channels = true;
                self.channels.clear();
            }
            "resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            "allcommands" | "+@all" => {
                self.allowed.iter_mut().for_each(|w| *w = u64::MAX);
                self.first_args.clear();
                self.rules.clear();
                self.from_all = true;
            }
            "nocommands" | "-@all" => {
                self.allowed.iter_mut().for_each(|w| *w = 0);
                self.first_args.clear();
                self.rules.clear();
                self.from_all = false;
            }
            _ => {
                if let Some(p) = rule.strip_prefix('~') {
                    self.add_keys(p, true, true);
                } else if let Some(rest) = rule.strip_prefix('%') {
                    let (perm, p) = rest.split_once('~').ok_or("Syntax error")?;
                    let (mut read, mut write) = (false, false);
                    for c in perm.chars() {
                        match c.to_ascii_uppercase() {
                            'R' => read = true,
                            'W' => write = true,
                            _ => return Err("Syntax error".into()),
                        }
                    }
                    if !read && !write {
                        return Err("Syntax error".into());
                    }
                    self.add_keys(p, read, write);
                } else if let Some(p) = rule.strip_prefix('&') {
                    if p == "*" {
                        self.all_channels = true;
                        self.channels.clear();
                    } else if !self.all_channels && !self.channels.iter().any(|c| c == p.as_bytes())
                    {
                        self.channels.push(p.as_bytes().to_vec());
                    }
                } else if let Some(name) = lower.strip_prefix('+') {
                    self.command_rule(name, true, cat)?;
                } else if let Some(name) = lower.strip_prefix('-') {
                    self.command_rule(name, false, cat)?;
                } else {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn add_keys(&mut self, pattern: &str, read: bool, write: bool) {
        let pattern = pattern.as_bytes().to_vec();
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(k) => {
                k.read |= read;
                k.write |= write;
            }
            None => self.keys.push(KeyPattern {
                pattern,
                read,
                write,
            }),
        }
    }

    /// `+name`, `-name`, `+@category`, `-@category`, `+cmd|sub`,
    /// `+cmd|firstarg` (`name` lower-case, without its sign).
    fn command_rule(&mut self, name: &str, on: bool, cat: &Catalogue) -> Result<(), String> {
        const UNKNOWN: &str = "Unknown command or category name in ACL";
        let sign = if on { '+' } else { '-' };
        if let Some(category) = name.strip_prefix('@') {
            let bit = category_bit(category).ok_or(UNKNOWN)?;
            for id in 0..cat.len() {
                if cat.categories(id) & bit != 0 {
                    self.set(id, on);
                    self.first_args.remove(&id);
                }
            }
            self.rules.push(format!("{sign}@{category}"));
            return Ok(());
        }
        if let Some(id) = cat.id(name) {
            self.set(id, on);
            self.first_args.remove(&id);
            for &sub in cat.subcommands(id) {
                self.set(sub, on);
            }
        } else {
            let (cmd, arg) = name.split_once('|').ok_or(UNKNOWN)?;
            let id = cat.id(cmd).ok_or(UNKNOWN)?;
            if !cat.subcommands(id).is_empty() || cat.is_subcommand(id) {
                return Err(UNKNOWN.into());
            }
            if !on {
                return Err(
                    "Allowing first-arg of a subcommand is not supported, only adding is".into(),
                );
            }
            if arg.is_empty() || arg.contains('|') {
                return Err("Syntax error".into());
            }
            if !self.get(id) {
                let args = self.first_args.entry(id).or_default();
                if !args.iter().any(|a| a == arg.as_bytes()) {
                    args.push(arg.as_bytes().to_vec());
                }
            }
        }
        // A later rule about the same command replaces an earlier one.
        self.rules.retain(|r| &r[1..] != name);
        self.rules.push(format!("{sign}{name}"));
        Ok(())
    }

    /// Whether this selector allows all of `access`; the first refusal if not.
    fn check(&self, access: &Access<'_>) -> Result<(), Denied> {
        let by_arg = || {
            let (Some(args), Some(a)) = (self.first_args.get(&access.command), access.first_arg)
            else {
                return false;
            };
            args.iter().any(|x| x.eq_ignore_ascii_case(a))
        };
        if !self.get(access.command) && !by_arg() {
            return Err(Denied::Command);
        }
        if !self.all_keys() {
            for &(key, read, write) in &access.keys {
                let ok = self.keys.iter().any(|k| {
                    (k.read || !read) && (k.write || !write) && glob_match(&k.pattern, key)
                });
                if !ok {
                    return Err(Denied::Key(key.to_vec()));
                }
            }
        }
        if !self.all_channels {
            for &ch in &access.channels {
                if !self.channels.iter().any(|p| glob_match(p, ch)) {
                    return Err(Denied::Channel(ch.to_vec()));
                }
            }
            for &p in &access.patterns {
                if !self.channels.iter().any(|c| c == p) {
                    return Err(Denied::Channel(p.to_vec()));
                }
            }
        }
        Ok(())
    }

    /// The command rules, as ACL LIST and GETUSER show them.
    fn describe_commands(&self) -> String {
        let mut out = String::from(if self.from_all { "+@all" } else { "-@all" });
        for r in &self.rules {
            out.push(' ');
            out.push_str(r);
        }
        out
    }

    fn describe_keys(&self) -> String {
        if self.all_keys() {
            return "~*".into();
        }
        let parts: Vec<String> = self.keys.iter().map(KeyPattern::describe).collect();
        parts.join(" ")
    }

    fn describe_channels(&self) -> String {
        if self.all_channels {
            return "&*".into();
        }
        let parts: Vec<String> = self
            .channels
            .iter()
            .map(|c| format!("&{}", String::from_utf8_lossy(c)))
            .collect();
        parts.join(" ")
    }

    /// Keys, channels and commands, in ACL LIST's words.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        let keys = self.describe_keys();
        if !keys.is_empty() {
            parts.push(keys);
        }
        if self.all_channels {
            parts.push("&*".into());
        } else {
            parts.push("resetchannels".into());
            let ch = self.describe_channels();
            if !ch.is_empty() {
                parts.push(ch);
            }
        }
        parts.push(self.describe_commands());
        parts.join(" ")
    }

    /// ACL GETUSER's fields for this selector: commands, keys, channels.
    pub fn fields(&self) -> [(&'static str, String); 3] {
        [
            ("commands", self.describe_commands()),
            ("keys", self.describe_keys()),
            ("channels", self.describe_channels()),
        ]
    }
}

/// A user: whether it may log in, with which passwords, and its selectors.
#[derive(Debug, Clone)]
pub struct User {
    /// The user name.
    pub name: String,
    /// `on`: new logins are allowed.
    pub enabled: bool,
    /// `nopass`: any password logs in.
    pub nopass: bool,
    /// SHA-256 hashes, lower-case hex.
    passwords: Vec<String>,
    sanitize_payload: bool,
    /// The root selector.
    pub root: Selector,
    selectors: Vec<Selector>,
    /// Allowed everything: checks are skipped.
    unrestricted: bool,
}

/// SHA-256 of a password, in lower-case hex: how passwords are stored.
pub fn hash_password(pass: &[u8]) -> String {
    Sha256::digest(pass)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl User {
    /// A new user: off, no passwords, no commands, keys or channels.
    pub fn new(name: &str, cat: &Catalogue) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            sanitize_payload: true,
            root: Selector::empty(cat),
            selectors: Vec::new(),
            unrestricted: false,
        }
    }

    /// Whether every command, key and channel is allowed, so a check can
    /// be skipped.
    pub fn unrestricted(&self) -> bool {
        self.unrestricted
    }

    /// Applies rules in order; the error names the failing rule. Callers
    /// apply to a copy and keep it only on success, so a failed rule
    /// changes nothing.
    pub fn apply_all<S: AsRef<str>>(&mut self, rules: &[S], cat: &Catalogue) -> Result<(), String> {
        for r in merge_selectors(rules)? {
            self.apply(&r, cat)
                .map_err(|e| format!("Error in ACL SETUSER modifier '{r}': {e}"))?;
        }
        self.unrestricted = self.root.all_commands(cat)
            && self.root.all_keys()
            && self.root.all_channels
            && self.root.first_args.is_empty();
        Ok(())
    }

    fn apply(&mut self, rule: &str, cat: &Catalogue) -> Result<(), String> {
        match rule.to_ascii_lowercase().as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "sanitize-payload" => self.sanitize_payload = true,
            "skip-sanitize-payload" => self.sanitize_payload = false,
            "clearselectors" => self.selectors.clear(),
            "reset" => {
                let name = std::mem::take(&mut self.name);
                *self = User::new(&name, cat);
            }
            _ => {
                if let Some(p) = rule.strip_prefix('>') {
                    let h = hash_password(p.as_bytes());
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                } else if let Some(p) = rule.strip_prefix('<') {
                    let h = hash_password(p.as_bytes());
                    let before = self.passwords.len();
                    self.passwords.retain(|x| *x != h);
                    if self.passwords.len() == before {
                        return Err(
                            "The password you are trying to remove from the user does not exist"
                                .into(),
                        );
                    }
                } else if let Some(h) = rule.strip_prefix('#') {
                    let valid = h.len() == 64
                        && h.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                    if !valid {
                        return Err("The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters".into());
                    }
                    if !self.passwords.iter().any(|x| x == h) {
                        self.passwords.push(h.to_string());
                    }
                    self.nopass = false;
                } else if let Some(h) = rule.strip_prefix('!') {
                    let before = self.passwords.len();
                    self.passwords.retain(|x| x != h);
                    if self.passwords.len() == before {
                        return Err(
                            "The password you are trying to remove from the user does not exist"
                                .into(),
                        );
                    }
                } else if let Some(inner) = rule.strip_prefix('(') {
                    let inner = inner.strip_suffix(')').ok_or("Syntax error")?;
                    let mut s = Selector::empty(cat);
                    for part in inner.split_ascii_whitespace() {
                        if !s.apply(part, cat)? {
                            return Err("Syntax error".into());
                        }
                    }
                    self.selectors.push(s);
                } else if !self.root.apply(rule, cat)? {
                    return Err("Syntax error".into());
                }
            }
        }
        Ok(())
    }

    /// Whether `pass` logs this user in.
    pub fn password_ok(&self, pass: &[u8]) -> bool {
        self.enabled && (self.nopass || self.passwords.contains(&hash_password(pass)))
    }

    /// Checks `access` against the root selector, then the others; the
    /// root's refusal is the one reported.
    pub fn check(&self, access: &Access<'_>) -> Result<(), Denied> {
        if self.unrestricted {
            return Ok(());
        }
        match self.root.check(access) {
            Err(_) if self.selectors.iter().any(|s| s.check(access).is_ok()) => Ok(()),
            other => other,
        }
    }

    /// The user's flags, as ACL GETUSER lists them.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        f.push(if self.sanitize_payload {
            "sanitize-payload"
        } else {
            "skip-sanitize-payload"
        });
        f
    }

    /// Password hashes.
    pub fn passwords(&self) -> &[String] {
        &self.passwords
    }

    /// The `(...)` selectors.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// The rules that rebuild this user, as ACL LIST shows them (without
    /// the leading `user <name>`).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.flags().iter().map(|f| f.to_string()).collect();
        parts.extend(self.passwords.iter().map(|h| format!("#{h}")));
        parts.push(self.root.describe());
        for s in &self.selectors {
            parts.push(format!("({})", s.describe()));
        }
        parts.join(" ")
    }
}

/// Joins a selector written over several arguments (`(+get` `~k*)`) into
/// one rule, as redis-cli users type it.
fn merge_selectors<S: AsRef<str>>(rules: &[S]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    for r in rules {
        let r = r.as_ref();
        match open.as_mut() {
            Some(acc) => {
                acc.push(' ');
                acc.push_str(r);
                if r.ends_with(')') {
                    out.extend(open.take());
                }
            }
            None if r.starts_with('(') && !r.ends_with(')') => open = Some(r.to_string()),
            None => out.push(r.to_string()),
        }
    }
    if let Some(acc) = open {
        let first = acc.split(' ').next().unwrap_or_default();
        return Err(format!(
            "Unmatched parenthesis in acl selector starting at '{first}'."
        ));
    }
    Ok(out)
}
