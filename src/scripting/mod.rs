//! Lua scripting: EVAL scripts and FUNCTION libraries run in one Lua 5.1
//! VM per node, as in Redis.
//!
//! ```text
//! EVAL / FCALL ─> Scripts::run ─> the script ─ redis.call ─> Host::call ─> the command table
//!                     │ a hook every 10k instructions: SCRIPT KILL?
//!                     └─ the gate held alone meanwhile (see node::Gate); past
//!                        busy-reply-threshold other clients get -BUSY
//! ```
//!
//! Scripts are sandboxed: no `os`, `io`, `package`, file loading or
//! bytecode, read-only globals and libraries, and a memory limit. The
//! VM knows nothing of commands: `redis.call` goes through a [`Host`]
//! that the command layer supplies, which checks what a script may run.

pub mod convert;
mod libs;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::commands::reply::Reply;
use convert::{arg_from_lua, error_text, error_text_of, lua_to_reply, reply_to_lua};

/// Stack for every thread that may run a script (the script thread, I/O
/// threads, the threads applying replicated entries): converting a value
/// nested a thousand deep (cjson, cmsgpack, a returned table) recurses
/// that deep. Only the pages used are ever touched.
pub const STACK_BYTES: usize = 64 << 20;

/// How many VM instructions pass between checks for SCRIPT KILL.
const HOOK_EVERY: u32 = 10_000;

/// What a running script's `redis.call` reaches.
pub trait Host {
    /// Runs one command for the script and returns its reply.
    fn call(&mut self, args: Vec<Bytes>) -> Reply;
}

/// Flags a script declares (`#!lua flags=...`) or a function registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// `no-writes`: may only read.
    pub no_writes: bool,
    /// `allow-oom`.
    pub allow_oom: bool,
    /// `allow-stale`.
    pub allow_stale: bool,
    /// `no-cluster`: refused in cluster mode.
    pub no_cluster: bool,
    /// `allow-cross-slot-keys`.
    pub allow_cross_slot: bool,
}

impl Flags {
    fn parse<'a>(names: impl Iterator<Item = &'a str>) -> Result<Flags, String> {
        let mut f = Flags::default();
        for name in names {
            match name {
                "no-writes" => f.no_writes = true,
                "allow-oom" => f.allow_oom = true,
                "allow-stale" => f.allow_stale = true,
                "no-cluster" => f.no_cluster = true,
                "allow-cross-slot-keys" => f.allow_cross_slot = true,
                "" => {}
                other => return Err(format!("Unexpected flag in script shebang: {other}")),
            }
        }
        Ok(f)
    }

    /// The flags' names, as FUNCTION LIST shows them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (on, name) in [
            (self.no_writes, "no-writes"),
            (self.allow_oom, "allow-oom"),
            (self.allow_stale, "allow-stale"),
            (self.no_cluster, "no-cluster"),
            (self.allow_cross_slot, "allow-cross-slot-keys"),
        ] {
            if on {
                out.push(name);
            }
        }
        out
    }
}

/// An EVAL script known to the node.
pub struct Script {
    /// SHA1 of the body, lower-case hex.
    pub sha: String,
    /// The body as sent.
    pub body: Bytes,
    /// Its shebang flags.
    pub flags: Flags,
}

/// A function some library registered.
#[derive(Clone)]
pub struct FunctionInfo {
    /// Its name.
    pub name: String,
    /// The library it belongs to.
    pub library: String,
    /// What it registered.
    pub description: Option<String>,
    /// Its flags.
    pub flags: Flags,
}

/// A loaded library, as FUNCTION LIST shows it.
#[derive(Clone)]
pub struct Library {
    /// Its name (from `#!lua name=...`).
    pub name: String,
    /// The source as loaded.
    pub code: String,
    /// Its functions by name.
    pub functions: BTreeMap<String, FunctionInfo>,
}

/// What is being run, for FUNCTION STATS and the BUSY reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An EVAL script.
    Script,
    /// A library function.
    Function,
}

/// The state of the script running now, shared with the VM's hook.
#[derive(Default)]
struct RunState {
    /// SCRIPT KILL / FUNCTION KILL asked it to stop.
    kill: AtomicBool,
    /// `redis.setresp(3)` was called.
    resp3: AtomicBool,
}

/// What runs now: its kind, name, command and start.
#[derive(Clone)]
pub struct Running {
    /// Script or function.
    pub kind: Kind,
    /// The SHA1 or function name.
    pub name: String,
    /// The command that started it.
    pub command: Vec<Bytes>,
    /// When it started.
    pub started: Instant,
}

/// Every script and library on a node, and the VM they run in.
pub struct Scripts {
    vm: Mutex<Option<Vm>>,
    state: Arc<RunState>,
    running: Mutex<Option<Running>>,
    /// Set once the running script has called a write command.
    wrote: AtomicBool,
    scripts: Mutex<HashMap<String, Arc<Script>>>,
    libraries: Mutex<BTreeMap<String, Library>>,
    /// Where libraries persist (None: in memory only).
    functions_file: Option<PathBuf>,
    memory_limit: usize,
}

/// A library as it is kept on disk.
#[derive(Serialize, Deserialize)]
struct SavedLibrary {
    name: String,
    code: String,
}

struct Vm {
    lua: Lua,
    /// `host.run` and `host.call_function`, kept at hand.
    run: Function,
    call_function: Function,
    /// The private table the sandbox prelude reads: `pcall` (set while a
    /// script runs), `run`, compiled scripts and library functions.
    host: Table,
    compiled: Table,
    functions: Table,
}

/// The SHA1 of a script body in hex, as EVALSHA names it.
pub fn sha1_hex(body: &[u8]) -> String {
    let digest = Sha1::digest(body);
    let mut s = String::with_capacity(40);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The sandbox: set up once per VM with the host table as its argument.
const PRELUDE: &str = r#"
local host = ...
local G = _G
local rawget, setmetatable, error, type, tostring, select, unpack =
      rawget, setmetatable, error, type, tostring, select, unpack
local raw_pcall, raw_xpcall, raw_loadstring, raw_rawset = pcall, xpcall, loadstring, rawset
local getfenv, setfenv = getfenv, setfenv

-- No files, no bytecode, no reaching the real globals.
loadfile, dofile, load, module, require, newproxy = nil, nil, nil, nil, nil, nil
G.getfenv, G.setfenv = nil, nil
G.loadstring = function(s, name)
  if type(s) == 'string' and s:byte(1) == 27 then
    return nil, 'loading bytecode is not allowed'
  end
  local f, e = raw_loadstring(s, name)
  -- A loaded chunk sees its caller's globals, not the shared ones.
  if f then setfenv(f, getfenv(2)) end
  return f, e
end

-- A killed script stays killed even if it catches the error.
local killed = host.killed
local function pass(ok, ...)
  if not ok and killed() then error((...), 0) end
  return ok, ...
end
G.pcall = function(...) return pass(raw_pcall(...)) end
G.xpcall = function(f, h) return pass(raw_xpcall(f, h)) end

local protected = setmetatable({}, { __mode = 'k' })
local function readonly(t)
  local proxy = setmetatable({}, {
    __index = t,
    __newindex = function() error('Attempt to modify a readonly table', 2) end,
    __metatable = false,
  })
  protected[proxy] = true
  return proxy
end
G.rawset = function(t, k, v)
  if protected[t] then error('Attempt to modify a readonly table', 2) end
  return raw_rawset(t, k, v)
end

local api = host.api
api.call = function(...)
  local p = host.pcall
  if p == nil then error('Please use redis.call only inside a script or function', 2) end
  local r = p(...)
  if type(r) == 'table' and r.err ~= nil then error(r, 0) end
  return r
end
api.pcall = function(...)
  local p = host.pcall
  if p == nil then error('Please use redis.pcall only inside a script or function', 2) end
  return p(...)
end
api.error_reply = function(msg)
  if type(msg) ~= 'string' then error('wrong number or type of arguments', 2) end
  return { err = msg }
end
api.status_reply = function(msg)
  if type(msg) ~= 'string' then error('wrong number or type of arguments', 2) end
  return { ok = msg }
end
api.register_function = function(...)
  local r = host.register
  if r == nil then
    error('redis.register_function can only be called on FUNCTION LOAD command', 2)
  end
  return r(...)
end
api.replicate_commands = function() return true end
api.set_repl = function() end
api.breakpoint = function() return false end
api.debug = function() end
api.REPL_NONE, api.REPL_AOF, api.REPL_SLAVE, api.REPL_REPLICA, api.REPL_ALL = 0, 1, 2, 2, 3
api.LOG_DEBUG, api.LOG_VERBOSE, api.LOG_NOTICE, api.LOG_WARNING = 0, 1, 2, 3
api.REDIS_VERSION = '7.2.0'
api.REDIS_VERSION_NUM = 0x070200
G.redis = readonly(api)

for _, name in ipairs({'string', 'table', 'math', 'cjson', 'cmsgpack', 'bit', 'struct', 'coroutine'}) do
  if rawget(G, name) ~= nil then G[name] = readonly(G[name]) end
end
-- Strings' methods come from the read-only string library too.
local string_mt = getmetatable('')
string_mt.__index = G.string
string_mt.__metatable = false

local env_mt = {
  __index = function(env, k)
    if k == '_G' then return env end
    local v = rawget(G, k)
    if v == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
    end
    return v
  end,
  __newindex = function(_, k)
    error("Attempt to modify a readonly table: tried to set global '" .. tostring(k) .. "'", 2)
  end,
  __metatable = false,
}
host.env = function() return setmetatable({}, env_mt) end

-- Runs an EVAL script with its own KEYS and ARGV.
host.run = function(f, keys, argv)
  local env = setmetatable({ KEYS = keys, ARGV = argv }, env_mt)
  setfenv(f, env)
  return raw_pcall(f)
end

-- Runs a library function with (keys, args).
host.call_function = function(f, keys, argv)
  return raw_pcall(f, keys, argv)
end

-- Runs a library's code at FUNCTION LOAD.
host.load_library = function(f)
  setfenv(f, setmetatable({}, env_mt))
  return raw_pcall(f)
end
"#;

impl Vm {
    fn new(state: Arc<RunState>, memory_limit: usize) -> mlua::Result<Vm> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        libs::register(&lua)?;
        let host = lua.create_table()?;
        let api = lua.create_table()?;
        let hook_state = state.clone();
        host.raw_set(
            "killed",
            lua.create_function(move |_, ()| Ok(hook_state.kill.load(Ordering::Relaxed)))?,
        )?;
        api.raw_set(
            "sha1hex",
            lua.create_function(|_, s: mlua::LuaString| Ok(sha1_hex(&s.as_bytes())))?,
        )?;
        let resp_state = state.clone();
        api.raw_set(
            "setresp",
            lua.create_function(move |_, v: i64| match v {
                2 | 3 => {
                    resp_state.resp3.store(v == 3, Ordering::Relaxed);
                    Ok(())
                }
                _ => Err(mlua::Error::RuntimeError(
                    "RESP version must be 2 or 3.".into(),
                )),
            })?,
        )?;
        api.raw_set(
            "log",
            lua.create_function(|_, args: MultiValue| {
                let level = args.front().and_then(|v| v.as_integer()).unwrap_or(2);
                let msg: Vec<String> = args
                    .iter()
                    .skip(1)
                    .map(|v| v.to_string().unwrap_or_default())
                    .collect();
                let msg = msg.join(" ");
                match level {
                    0 => tracing::debug!(target: "script", "{msg}"),
                    1 | 2 => tracing::info!(target: "script", "{msg}"),
                    _ => tracing::warn!(target: "script", "{msg}"),
                }
                Ok(())
            })?,
        )?;
        host.raw_set("api", api)?;
        let compiled = lua.create_table()?;
        let functions = lua.create_table()?;
        lua.load(PRELUDE)
            .set_name("=sandbox")
            .set_mode(ChunkMode::Text)
            .call::<()>(host.clone())?;
        let kill_state = state.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| {
                if kill_state.kill.load(Ordering::Relaxed) {
                    Err(mlua::Error::RuntimeError(
                        "ERR Script killed by user with SCRIPT KILL...".into(),
                    ))
                } else {
                    Ok(VmState::Continue)
                }
            },
        )?;
        if memory_limit > 0 {
            lua.set_memory_limit(memory_limit)?;
        }
        Ok(Vm {
            run: host.raw_get("run")?,
            call_function: host.raw_get("call_function")?,
            lua,
            host,
            compiled,
            functions,
        })
    }

    /// Compiles a chunk of source text (never bytecode).
    fn compile(&self, code: &[u8], name: &str) -> Result<Function, String> {
        self.lua
            .load(code)
            .set_name(name)
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| error_text(&e))
    }
}

/// A shebang line read: the engine, its `key=value` options, and the
/// source with the line blanked (line numbers stay).
type Shebang = (String, Vec<(String, String)>, Vec<u8>);

/// Reads a shebang line: `#!<engine> key=value ...`.
fn shebang(body: &[u8]) -> Option<Shebang> {
    if !body.starts_with(b"#!") {
        return None;
    }
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = String::from_utf8_lossy(&body[2..end]).to_string();
    let mut words = line.split_whitespace();
    let engine = words.next().unwrap_or("").to_string();
    let pairs = words
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect();
    let mut rest = Vec::with_capacity(body.len() - end);
    rest.extend_from_slice(&body[end..]);
    Some((engine, pairs, rest))
}

/// The script has run into an error: the reply for it.
fn failure(v: &Value, sha: &str) -> Reply {
    match v {
        Value::Table(t) => match t.raw_get::<Value>("err") {
            Ok(Value::String(e)) => Reply::err(error_text_of(&e.to_string_lossy())),
            _ => Reply::err(format!("ERR script error: {sha}")),
        },
        Value::Error(e) => {
            let text = error_text(e);
            if text.starts_with("ERR Script killed") {
                return Reply::err("ERR Script killed by user with SCRIPT KILL...");
            }
            Reply::err(format!("ERR {text} script: {sha}"))
        }
        Value::String(s) => Reply::err(format!("ERR {} script: {sha}", s.to_string_lossy())),
        other => Reply::err(format!(
            "ERR {} script: {sha}",
            other.to_string().unwrap_or_else(|_| "error".into())
        )),
    }
}

impl Scripts {
    /// The node's scripting: libraries persist in `functions_file`; the
    /// VM may use up to `memory_limit` bytes (0: no limit).
    pub fn new(functions_file: Option<PathBuf>, memory_limit: usize) -> Scripts {
        let s = Scripts {
            vm: Mutex::new(None),
            state: Arc::new(RunState::default()),
            running: Mutex::new(None),
            wrote: AtomicBool::new(false),
            scripts: Mutex::new(HashMap::new()),
            libraries: Mutex::new(BTreeMap::new()),
            functions_file,
            memory_limit,
        };
        s.restore_libraries();
        s
    }

    fn with_vm<R>(&self, f: impl FnOnce(&Vm) -> R) -> Result<R, Reply> {
        let mut guard = self.vm.lock();
        if guard.is_none() {
            let vm = Vm::new(self.state.clone(), self.memory_limit)
                .map_err(|e| Reply::err(format!("ERR starting Lua: {e}")))?;
            *guard = Some(vm);
        }
        let vm = guard.as_ref().expect("VM was just created");
        Ok(f(vm))
    }

    /// The script with this SHA1, if known.
    pub fn script(&self, sha: &str) -> Option<Arc<Script>> {
        self.scripts.lock().get(&sha.to_ascii_lowercase()).cloned()
    }

    /// Compiles and remembers a script (EVAL, SCRIPT LOAD).
    pub fn load(&self, body: Bytes) -> Result<Arc<Script>, Reply> {
        let sha = sha1_hex(&body);
        if let Some(s) = self.script(&sha) {
            return Ok(s);
        }
        let (flags, source) = match shebang(&body) {
            Some((engine, pairs, rest)) => {
                if engine != "lua" {
                    return Err(Reply::err(format!("ERR Could not find engine '{engine}'")));
                }
                let mut flags = Flags::default();
                for (k, v) in pairs {
                    if k != "flags" {
                        return Err(Reply::err(format!("ERR Unknown lua shebang option: {k}")));
                    }
                    flags =
                        Flags::parse(v.split(',')).map_err(|e| Reply::err(format!("ERR {e}")))?;
                }
                (flags, rest)
            }
            None => (Flags::default(), body.to_vec()),
        };
        let script = Arc::new(Script {
            sha: sha.clone(),
            body,
            flags,
        });
        self.with_vm(|vm| {
            let f = vm.compile(&source, "@user_script").map_err(|e| {
                Reply::err(format!("ERR Error compiling script (new function): {e}"))
            })?;
            vm.compiled
                .raw_set(sha.as_str(), f)
                .map_err(|e| Reply::err(format!("ERR {e}")))
        })??;
        self.scripts.lock().insert(sha, script.clone());
        Ok(script)
    }

    /// Whether each SHA1 is known (SCRIPT EXISTS).
    pub fn exists(&self, sha: &str) -> bool {
        self.scripts.lock().contains_key(&sha.to_ascii_lowercase())
    }

    /// Forgets every script (SCRIPT FLUSH).
    pub fn flush_scripts(&self) {
        let shas: Vec<String> = self.scripts.lock().drain().map(|(k, _)| k).collect();
        let _ = self.with_vm(|vm| {
            for sha in shas {
                let _ = vm.compiled.raw_set(sha, Value::Nil);
            }
            let _ = vm.lua.gc_collect();
        });
    }

    /// What runs now, if anything.
    pub fn running(&self) -> Option<Running> {
        self.running.lock().clone()
    }

    /// Notes that the running script called a write command.
    pub fn mark_wrote(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }

    /// SCRIPT KILL / FUNCTION KILL: stops the running script of `kind`
    /// unless it has written.
    pub fn kill(&self, kind: Kind) -> Reply {
        if self.running().is_none_or(|r| r.kind != kind) {
            return Reply::err("NOTBUSY No scripts in execution right now.");
        }
        if self.wrote.load(Ordering::Relaxed) {
            return Reply::err(
                "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
            );
        }
        self.state.kill.store(true, Ordering::Relaxed);
        Reply::OK
    }

    /// Stops whatever script runs, if it hasn't written (the node is
    /// shutting down).
    pub fn stop(&self) {
        if let Some(running) = self.running() {
            let _ = self.kill(running.kind);
        }
    }

    /// Runs an EVAL script.
    pub fn run_script(
        &self,
        script: &Script,
        keys: &[Bytes],
        args: &[Bytes],
        command: &[Bytes],
        host: &mut dyn Host,
    ) -> Reply {
        let sha = script.sha.clone();
        self.run(Kind::Script, &sha, command, host, |vm| {
            let f: Function = match vm.compiled.raw_get(sha.as_str()) {
                Ok(Value::Function(f)) => f,
                _ => return Err(Reply::err("NOSCRIPT No matching script. Please use EVAL.")),
            };
            let run = vm.run.clone();
            let keys = strings(&vm.lua, keys).map_err(lua_err)?;
            let argv = strings(&vm.lua, args).map_err(lua_err)?;
            Ok((run, (f, keys, argv)))
        })
    }

    /// Runs a library function.
    pub fn run_function(
        &self,
        name: &str,
        keys: &[Bytes],
        args: &[Bytes],
        command: &[Bytes],
        host: &mut dyn Host,
    ) -> Reply {
        self.run(Kind::Function, name, command, host, |vm| {
            let f: Function = match vm.functions.raw_get(name) {
                Ok(Value::Function(f)) => f,
                _ => return Err(Reply::err("ERR Function not found")),
            };
            let call = vm.call_function.clone();
            let keys = strings(&vm.lua, keys).map_err(lua_err)?;
            let argv = strings(&vm.lua, args).map_err(lua_err)?;
            Ok((call, (f, keys, argv)))
        })
    }

    fn run(
        &self,
        kind: Kind,
        name: &str,
        command: &[Bytes],
        host: &mut dyn Host,
        prepare: impl FnOnce(&Vm) -> Result<(Function, (Function, Table, Table)), Reply>,
    ) -> Reply {
        let outcome = self.with_vm(|vm| {
            let (runner, args) = prepare(vm)?;
            self.state.kill.store(false, Ordering::Relaxed);
            self.state.resp3.store(false, Ordering::Relaxed);
            self.wrote.store(false, Ordering::Relaxed);
            *self.running.lock() = Some(Running {
                kind,
                name: name.to_string(),
                command: command.to_vec(),
                started: Instant::now(),
            });
            let state = &self.state;
            let result = vm.lua.scope(|scope| {
                let pcall = scope.create_function_mut(|lua, args: MultiValue| {
                    if args.is_empty() {
                        return reply_to_lua(
                            lua,
                            &Reply::err("ERR Please specify at least one argument for this redis lib call"),
                            false,
                        );
                    }
                    let mut cmd = Vec::with_capacity(args.len());
                    for a in args.iter() {
                        match arg_from_lua(a) {
                            Some(b) => cmd.push(b),
                            None => {
                                return reply_to_lua(
                                    lua,
                                    &Reply::err("ERR Lua redis lib command arguments must be strings or integers"),
                                    false,
                                )
                            }
                        }
                    }
                    let reply = host.call(cmd);
                    reply_to_lua(lua, &reply, state.resp3.load(Ordering::Relaxed))
                })?;
                vm.host.raw_set("pcall", pcall)?;
                let out = runner.call::<MultiValue>(args);
                vm.host.raw_set("pcall", Value::Nil)?;
                let out = out?;
                let mut it = out.into_iter();
                let ok = matches!(it.next(), Some(Value::Boolean(true)));
                let value = it.next().unwrap_or(Value::Nil);
                Ok(if ok {
                    lua_to_reply(&value)
                } else {
                    failure(&value, name)
                })
            });
            *self.running.lock() = None;
            // Give memory a big script took back at once.
            if vm.lua.used_memory() > 64 << 20 {
                let _ = vm.lua.gc_collect();
            }
            let killed = self.state.kill.swap(false, Ordering::Relaxed);
            match result {
                Ok(_) if killed => Ok(Reply::err("ERR Script killed by user with SCRIPT KILL...")),
                Ok(reply) => Ok(reply),
                Err(e) => Ok(Reply::err(format!("ERR {} script: {name}", error_text(&e)))),
            }
        });
        match outcome {
            Ok(Ok(r)) | Ok(Err(r)) | Err(r) => r,
        }
    }

    // ------------------------------------------------------- functions

    /// FUNCTION LOAD: the library's name, or why it was refused.
    pub fn load_library(&self, code: &str, replace: bool) -> Result<String, Reply> {
        let (engine, pairs, source) =
            shebang(code.as_bytes()).ok_or_else(|| Reply::err("ERR Missing library metadata"))?;
        if !engine.eq_ignore_ascii_case("lua") {
            return Err(Reply::err(format!("ERR Engine '{engine}' not found")));
        }
        let mut name = None;
        for (k, v) in pairs {
            match k.as_str() {
                "name" => name = Some(v),
                other => {
                    return Err(Reply::err(format!(
                        "ERR Invalid metadata value given: {other}"
                    )))
                }
            }
        }
        let name = name.ok_or_else(|| Reply::err("ERR Library name was not given"))?;
        if !valid_name(&name) {
            return Err(Reply::err(
                "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long",
            ));
        }
        if !replace && self.libraries.lock().contains_key(&name) {
            return Err(Reply::err(format!("ERR Library '{name}' already exists")));
        }
        self.with_vm(|vm| {
            let compiled = self.compile_library(vm, &name, &source)?;
            let mut libraries = self.libraries.lock();
            for fname in compiled.keys() {
                let taken = libraries
                    .values()
                    .any(|l| l.name != name && l.functions.contains_key(fname));
                if taken {
                    return Err(Reply::err(format!("ERR Function {fname} already exists")));
                }
            }
            if let Some(old) = libraries.remove(&name) {
                for fname in old.functions.keys() {
                    let _ = vm.functions.raw_set(fname.as_str(), Value::Nil);
                }
            }
            let mut functions = BTreeMap::new();
            for (fname, (info, f)) in compiled {
                vm.functions.raw_set(fname.as_str(), f).map_err(lua_err)?;
                functions.insert(fname, info);
            }
            libraries.insert(
                name.clone(),
                Library {
                    name: name.clone(),
                    code: code.to_string(),
                    functions,
                },
            );
            Ok(())
        })??;
        self.save_libraries();
        Ok(name)
    }

    /// FUNCTION DELETE.
    pub fn delete_library(&self, name: &str) -> Result<(), Reply> {
        self.with_vm(|vm| {
            let Some(old) = self.libraries.lock().remove(name) else {
                return Err(Reply::err("ERR Library not found"));
            };
            for fname in old.functions.keys() {
                let _ = vm.functions.raw_set(fname.as_str(), Value::Nil);
            }
            Ok(())
        })??;
        self.save_libraries();
        Ok(())
    }

    /// FUNCTION FLUSH.
    pub fn flush_libraries(&self) {
        let _ = self.with_vm(|vm| {
            let mut libraries = self.libraries.lock();
            for lib in libraries.values() {
                for fname in lib.functions.keys() {
                    let _ = vm.functions.raw_set(fname.as_str(), Value::Nil);
                }
            }
            libraries.clear();
            let _ = vm.lua.gc_collect();
        });
        self.save_libraries();
    }

    /// Every library, by name.
    pub fn libraries(&self) -> Vec<Library> {
        self.libraries.lock().values().cloned().collect()
    }

    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<FunctionInfo> {
        self.libraries
            .lock()
            .values()
            .find_map(|l| l.functions.get(name).cloned())
    }

    /// Writes the libraries to their file (write, sync, rename), so they
    /// survive a restart as Redis keeps them in its snapshot.
    fn save_libraries(&self) {
        let Some(path) = &self.functions_file else {
            return;
        };
        let saved: Vec<SavedLibrary> = self
            .libraries
            .lock()
            .values()
            .map(|l| SavedLibrary {
                name: l.name.clone(),
                code: l.code.clone(),
            })
            .collect();
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(&saved)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            tracing::error!(error = %e, path = %path.display(), "saving function libraries failed");
        }
    }

    /// Loads the libraries saved by an earlier run.
    fn restore_libraries(&self) {
        let Some(path) = &self.functions_file else {
            return;
        };
        let Ok(text) = std::fs::read(path) else {
            return;
        };
        let saved: Vec<SavedLibrary> = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "function library file is unreadable; starting without it");
                return;
            }
        };
        for lib in saved {
            if let Err(Reply::Error(e)) = self.load_library(&lib.code, true) {
                tracing::error!(
                    library = lib.name,
                    error = e,
                    "a saved function library failed to load"
                );
            }
        }
    }

    /// Runs a library's code, collecting what it registers; nothing is
    /// installed yet.
    fn compile_library(
        &self,
        vm: &Vm,
        library: &str,
        source: &[u8],
    ) -> Result<BTreeMap<String, (FunctionInfo, Function)>, Reply> {
        let f = vm
            .compile(source, "@user_function")
            .map_err(|e| Reply::err(format!("ERR Error compiling function: {e}")))?;
        let registered = std::cell::RefCell::new(BTreeMap::new());
        let result = vm.lua.scope(|scope| {
            let register = scope.create_function(|_, args: MultiValue| {
                let (name, callback, flags, description) = registration(&args)?;
                if !valid_name(&name) {
                    return Err(mlua::Error::RuntimeError(
                        "Function names can only contain letters, numbers, or underscores(_) and must be at least one character long".into(),
                    ));
                }
                let mut reg = registered.borrow_mut();
                if reg.contains_key(&name) {
                    return Err(mlua::Error::RuntimeError(format!(
                        "Function {name} already exists"
                    )));
                }
                reg.insert(
                    name.clone(),
                    (
                        FunctionInfo {
                            name,
                            library: library.to_string(),
                            description,
                            flags,
                        },
                        callback,
                    ),
                );
                Ok(())
            })?;
            vm.host.raw_set("register", register)?;
            let load: Function = vm.host.raw_get("load_library")?;
            let out = load.call::<MultiValue>(f);
            vm.host.raw_set("register", Value::Nil)?;
            out
        });
        let out = result.map_err(|e| {
            Reply::err(format!(
                "ERR Error registering functions: {}",
                error_text(&e)
            ))
        })?;
        let mut it = out.into_iter();
        if !matches!(it.next(), Some(Value::Boolean(true))) {
            let why = it.next().map_or_else(String::new, |v| match v {
                Value::Error(e) => error_text(&e),
                Value::Table(t) => t.raw_get::<String>("err").unwrap_or_default(),
                other => other.to_string().unwrap_or_default(),
            });
            return Err(Reply::err(format!(
                "ERR Error registering functions: {why}"
            )));
        }
        let registered = registered.into_inner();
        if registered.is_empty() {
            return Err(Reply::err("ERR No functions registered"));
        }
        Ok(registered)
    }
}

/// A Lua array of strings.
fn strings(lua: &Lua, items: &[Bytes]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, b) in items.iter().enumerate() {
        t.raw_set(i + 1, lua.create_string(b)?)?;
    }
    Ok(t)
}

fn lua_err(e: mlua::Error) -> Reply {
    Reply::err(format!("ERR {}", error_text(&e)))
}

/// Whether a library or function name is letters, digits and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `redis.register_function(name, callback)` or
/// `redis.register_function{function_name=..., callback=..., flags=..., description=...}`.
fn registration(args: &MultiValue) -> mlua::Result<(String, Function, Flags, Option<String>)> {
    let bad = || {
        mlua::Error::RuntimeError(
            "wrong number or type of arguments to redis.register_function".into(),
        )
    };
    match (args.front(), args.get(1)) {
        (Some(Value::String(name)), Some(Value::Function(f))) if args.len() == 2 => {
            Ok((name.to_string_lossy(), f.clone(), Flags::default(), None))
        }
        (Some(Value::Table(t)), None) => {
            let name: String = t.raw_get("function_name").map_err(|_| bad())?;
            let f: Function = t.raw_get("callback").map_err(|_| bad())?;
            let description: Option<String> = t.raw_get("description").ok();
            let flags = match t.raw_get::<Value>("flags")? {
                Value::Nil => Flags::default(),
                Value::Table(list) => {
                    let names: Vec<String> = list
                        .sequence_values::<String>()
                        .collect::<mlua::Result<_>>()?;
                    Flags::parse(names.iter().map(String::as_str))
                        .map_err(|_| mlua::Error::RuntimeError("unknown flag given".into()))?
                }
                _ => return Err(bad()),
            };
            Ok((name, f, flags, description))
        }
        _ => Err(bad()),
    }
}
