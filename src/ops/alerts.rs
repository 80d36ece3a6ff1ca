//! Alert rules (seed 001's table, mapped to strata) and their cooldowns.
//!
//! | rule | seed 001 | fires when | threshold | severity | cooldown |
//! |---|---|---|---|---|---|
//! | `node_unreachable` | Redis Connection Down | this node's RESP port doesn't answer PING, or its log refuses writes | probe timeout, s | critical | 5 min |
//! | `cluster_node_down` | Cluster Node Down | more members down than the threshold, or a shard without a leader or its full replica set | members | high | 10 min |
//! | `high_memory` | High Memory Usage | the memory tier above this fraction of its cap | 0.8 | medium | 15 min |
//! | `workers_down` | Queue System Down | a partition this node should aggregate has had no working worker, or unread entries and no commit, for this many seconds | 60 s | critical | 5 min |
//! | `failed_events` | High Failed Jobs | events rejected at the door or dead-lettered in the last hour above this | 100 | medium | 30 min |
//! | `system_memory_low` | System Memory Low | available system memory below this fraction | 0.10 | high | 15 min |
//! | `high_load` | High System Load | one-minute load average above this many times the cores | 2.0 | medium | 20 min |
//! | `health_critical` | Health Score Critical | the health score below this | 50 | critical | 10 min |
//!
//! Each rule is evaluated at every monitoring tick. A rule whose
//! condition holds fires an alert, unless it fired less than its cooldown
//! ago; while it keeps holding, it fires again each time the cooldown
//! runs out. When the condition clears, a `resolved` entry is recorded.
//! The engine takes the time as an argument, so its tests drive a clock
//! of their own.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Needs attention soon.
    Medium,
    /// Needs attention now.
    High,
    /// Service is at risk.
    Critical,
}

impl Severity {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.name() == s)
    }
}

/// One rule's settings in the config file (`[alerts.<rule>]`); what is
/// left out keeps the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSettings {
    /// Whether the rule is evaluated.
    pub enabled: Option<bool>,
    /// The rule's threshold (see the table above for its unit).
    pub threshold: Option<f64>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: Option<String>,
    /// Seconds before the rule may fire again.
    pub cooldown_secs: Option<u64>,
}

/// The rules' settings by rule name.
pub type AlertsConfig = BTreeMap<String, RuleSettings>;

/// What a threshold may be.
#[derive(Clone, Copy)]
enum Range {
    /// A fraction, above 0 and at most 1.
    Ratio,
    /// Zero or more.
    Count,
    /// Above zero.
    Positive,
    /// 0 to 100.
    Score,
}

/// A built-in rule.
struct Def {
    name: &'static str,
    title: &'static str,
    severity: Severity,
    cooldown_secs: u64,
    threshold: f64,
    range: Range,
}

const DEFS: [Def; 8] = [
    Def {
        name: "node_unreachable",
        title: "Node unreachable",
        severity: Severity::Critical,
        cooldown_secs: 300,
        threshold: 2.0,
        range: Range::Positive,
    },
    Def {
        name: "cluster_node_down",
        title: "Cluster node down",
        severity: Severity::High,
        cooldown_secs: 600,
        threshold: 0.0,
        range: Range::Count,
    },
    Def {
        name: "high_memory",
        title: "High memory usage",
        severity: Severity::Medium,
        cooldown_secs: 900,
        threshold: 0.8,
        range: Range::Positive,
    },
    Def {
        name: "workers_down",
        title: "Aggregation workers down",
        severity: Severity::Critical,
        cooldown_secs: 300,
        threshold: 60.0,
        range: Range::Positive,
    },
    Def {
        name: "failed_events",
        title: "High failed events",
        severity: Severity::Medium,
        cooldown_secs: 1800,
        threshold: 100.0,
        range: Range::Count,
    },
    Def {
        name: "system_memory_low",
        title: "System memory low",
        severity: Severity::High,
        cooldown_secs: 900,
        threshold: 0.10,
        range: Range::Ratio,
    },
    Def {
        name: "high_load",
        title: "High system load",
        severity: Severity::Medium,
        cooldown_secs: 1200,
        threshold: 2.0,
        range: Range::Positive,
    },
    Def {
        name: "health_critical",
        title: "Health score critical",
        severity: Severity::Critical,
        cooldown_secs: 600,
        threshold: 50.0,
        range: Range::Score,
    },
];

/// The names of the built-in rules.
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    DEFS.iter().map(|d| d.name)
}

/// Checks the rules' settings; the error names the field at fault.
pub fn validate(cfg: &AlertsConfig) -> Result<(), (String, String)> {
    for (name, s) in cfg {
        let field = |f: &str| format!("alerts.{name}.{f}");
        let Some(def) = DEFS.iter().find(|d| d.name == name) else {
            return Err((
                format!("alerts.{name}"),
                format!(
                    "no such alert rule (rules: {})",
                    rule_names().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if let Some(sev) = &s.severity {
            if Severity::parse(sev).is_none() {
                return Err((
                    field("severity"),
                    format!("{sev:?} is not one of low, medium, high, critical"),
                ));
            }
        }
        if let Some(t) = s.threshold {
            let ok = t.is_finite()
                && match def.range {
                    Range::Ratio => t > 0.0 && t <= 1.0,
                    Range::Count => t >= 0.0,
                    Range::Positive => t > 0.0,
                    Range::Score => (0.0..=100.0).contains(&t),
                };
            if !ok {
                let want = match def.range {
                    Range::Ratio => "a fraction above 0 and at most 1",
                    Range::Count => "a number of 0 or more",
                    Range::Positive => "a number above 0",
                    Range::Score => "a score from 0 to 100",
                };
                return Err((field("threshold"), format!("must be {want}")));
            }
        }
        if s.cooldown_secs.is_some_and(|c| c > 7 * 86_400) {
            return Err((
                field("cooldown_secs"),
                "must be at most 604800 (a week)".into(),
            ));
        }
    }
    Ok(())
}

/// A rule with its settings applied.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// Its name.
    pub name: &'static str,
    /// What it is called in an alert.
    pub title: &'static str,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// Its threshold.
    pub threshold: f64,
    /// Severity of its alerts.
    pub severity: Severity,
    /// Seconds before it may fire again.
    pub cooldown_secs: u64,
}

/// Every rule, defaults overridden by `cfg` (validated beforehand).
pub fn rules(cfg: &AlertsConfig) -> Vec<Rule> {
    DEFS.iter()
        .map(|d| {
            let s = cfg.get(d.name).cloned().unwrap_or_default();
            Rule {
                name: d.name,
                title: d.title,
                enabled: s.enabled.unwrap_or(true),
                threshold: s.threshold.unwrap_or(d.threshold),
                severity: s
                    .severity
                    .as_deref()
                    .and_then(Severity::parse)
                    .unwrap_or(d.severity),
                cooldown_secs: s.cooldown_secs.unwrap_or(d.cooldown_secs),
            }
        })
        .collect()
}

/// What the rules look at, gathered once per tick.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Why this node can't serve, if it can't (failed probe, refused writes).
    pub unreachable: Option<String>,
    /// Seconds the self-probe took (None when it failed).
    pub probe_secs: Option<f64>,
    /// Members that don't answer (cluster only).
    pub members_down: Vec<String>,
    /// Shards without a leader or their full replica set (cluster only).
    pub shards_short: Vec<u32>,
    /// Memory tier use against its cap.
    pub memory_ratio: f64,
    /// Partitions this node should aggregate whose worker is not working,
    /// and for how many seconds.
    pub workers_missing: Vec<(usize, f64)>,
    /// Partitions with unread entries, and seconds since their last commit.
    pub workers_stalled: Vec<(usize, f64)>,
    /// Events rejected or dead-lettered in the last hour.
    pub failed_last_hour: u64,
    /// Available fraction of system memory.
    pub system_memory_free: Option<f64>,
    /// One-minute load per core.
    pub load_per_core: Option<f64>,
    /// The health score.
    pub health_score: u32,
}

/// Whether `rule` holds for `o`: the measured value and a message.
fn check(rule: &Rule, o: &Observed) -> Option<(f64, String)> {
    let t = rule.threshold;
    match rule.name {
        "node_unreachable" => {
            if let Some(why) = &o.unreachable {
                return Some((1.0, why.clone()));
            }
            let secs = o.probe_secs?;
            (secs > t).then(|| (secs, format!("PING took {secs:.2} s (limit {t} s)")))
        }
        "cluster_node_down" => {
            let down = o.members_down.len() as f64;
            if down > t {
                Some((
                    down,
                    format!("members not answering: {}", o.members_down.join(", ")),
                ))
            } else if !o.shards_short.is_empty() {
                Some((
                    o.shards_short.len() as f64,
                    format!(
                        "shards without a leader or their full replica set: {:?}",
                        o.shards_short
                    ),
                ))
            } else {
                None
            }
        }
        "high_memory" => (o.memory_ratio > t).then(|| {
            (
                o.memory_ratio,
                format!(
                    "memory tier at {:.0}% of its cap (limit {:.0}%)",
                    o.memory_ratio * 100.0,
                    t * 100.0
                ),
            )
        }),
        "workers_down" => {
            let over = |list: &[(usize, f64)]| -> Vec<usize> {
                list.iter()
                    .filter(|(_, secs)| *secs > t)
                    .map(|(p, _)| *p)
                    .collect()
            };
            let (missing, stalled) = (over(&o.workers_missing), over(&o.workers_stalled));
            if !missing.is_empty() {
                Some((
                    missing.len() as f64,
                    format!("partitions without a working worker for {t} s: {missing:?}"),
                ))
            } else if !stalled.is_empty() {
                Some((
                    stalled.len() as f64,
                    format!("partitions with unread entries and no commit for {t} s: {stalled:?}"),
                ))
            } else {
                None
            }
        }
        "failed_events" => {
            let n = o.failed_last_hour as f64;
            (n > t).then(|| {
                (
                    n,
                    format!("{n} events rejected or dead-lettered in the last hour (limit {t})"),
                )
            })
        }
        "system_memory_low" => {
            let free = o.system_memory_free?;
            (free < t).then(|| {
                (
                    free,
                    format!(
                        "{:.1}% of system memory available (limit {:.0}%)",
                        free * 100.0,
                        t * 100.0
                    ),
                )
            })
        }
        "high_load" => {
            let load = o.load_per_core?;
            (load > t).then(|| (load, format!("load {load:.2} per core (limit {t})")))
        }
        "health_critical" => {
            let s = f64::from(o.health_score);
            (s < t).then(|| (s, format!("health score {s} (limit {t})")))
        }
        _ => None,
    }
}

/// One entry of the alert history.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Increasing id.
    pub id: u64,
    /// The rule.
    pub rule: &'static str,
    /// The rule's title.
    pub title: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// What was seen.
    pub message: String,
    /// The measured value.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The node that raised it.
    pub node_id: String,
    /// When, epoch ms.
    pub timestamp: u64,
}

#[derive(Debug, Clone, Default)]
struct RuleState {
    firing: bool,
    last_fired_ms: Option<u64>,
    fired: u64,
    suppressed: u64,
}

/// A rule's state, for the API and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    /// The rule and its settings.
    #[serde(flatten)]
    pub rule: Rule,
    /// Whether its condition held at the last evaluation.
    pub firing: bool,
    /// Alerts it fired.
    pub fired: u64,
    /// Evaluations where it held but its cooldown kept it quiet.
    pub suppressed: u64,
    /// When it last fired, epoch ms.
    pub last_fired: Option<u64>,
}

/// The rules, their state and the bounded history.
pub struct Engine {
    rules: Vec<Rule>,
    state: BTreeMap<&'static str, RuleState>,
    history: VecDeque<Alert>,
    keep: usize,
    next_id: u64,
    node_id: String,
}

impl Engine {
    /// An engine for `rules`, keeping the last `keep` alerts.
    pub fn new(rules: Vec<Rule>, keep: usize, node_id: String) -> Engine {
        Engine {
            rules,
            state: BTreeMap::new(),
            history: VecDeque::new(),
            keep: keep.max(1),
            next_id: 1,
            node_id,
        }
    }

    /// Replaces the rules' settings, keeping their state.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.rules = rules;
    }

    /// Evaluates every enabled rule at `now_ms`; returns the alerts
    /// raised (firing and resolved), which are also in the history.
    pub fn evaluate(&mut self, o: &Observed, now_ms: u64) -> Vec<Alert> {
        let mut raised = Vec::new();
        for rule in &self.rules {
            let st = self.state.entry(rule.name).or_default();
            let hit = if rule.enabled { check(rule, o) } else { None };
            let alert = |status, value, message| Alert {
                id: 0,
                rule: rule.name,
                title: rule.title,
                severity: rule.severity,
                status,
                message,
                value,
                threshold: rule.threshold,
                node_id: self.node_id.clone(),
                timestamp: now_ms,
            };
            match hit {
                Some((value, message)) => {
                    let cooled = st
                        .last_fired_ms
                        .is_none_or(|at| now_ms.saturating_sub(at) >= rule.cooldown_secs * 1000);
                    if cooled {
                        st.last_fired_ms = Some(now_ms);
                        st.fired += 1;
                        raised.push(alert("firing", value, message));
                    } else {
                        st.suppressed += 1;
                    }
                    st.firing = true;
                }
                None if st.firing => {
                    st.firing = false;
                    raised.push(alert("resolved", 0.0, format!("{} cleared", rule.title)));
                }
                None => {}
            }
        }
        for a in &mut raised {
            a.id = self.next_id;
            self.next_id += 1;
            self.history.push_back(a.clone());
        }
        while self.history.len() > self.keep {
            self.history.pop_front();
        }
        raised
    }

    /// The history, newest first, at most `limit`.
    pub fn history(&self, limit: usize) -> Vec<Alert> {
        self.history.iter().rev().take(limit).cloned().collect()
    }

    /// Every rule with its state.
    pub fn status(&self) -> Vec<RuleStatus> {
        self.rules
            .iter()
            .map(|r| {
                let st = self.state.get(r.name).cloned().unwrap_or_default();
                RuleStatus {
                    rule: r.clone(),
                    firing: st.firing,
                    fired: st.fired,
                    suppressed: st.suppressed,
                    last_fired: st.last_fired_ms,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calm() -> Observed {
        Observed {
            probe_secs: Some(0.001),
            memory_ratio: 0.3,
            system_memory_free: Some(0.5),
            load_per_core: Some(0.2),
            health_score: 100,
            ..Observed::default()
        }
    }

    fn engine() -> Engine {
        Engine::new(rules(&AlertsConfig::new()), 100, "n1".into())
    }

    fn fired(raised: &[Alert]) -> Vec<(&'static str, &'static str)> {
        raised.iter().map(|a| (a.rule, a.status)).collect()
    }

    #[test]
    fn a_calm_node_raises_nothing() {
        let mut e = engine();
        assert!(e.evaluate(&calm(), 0).is_empty());
        assert_eq!(e.status().len(), 8);
    }

    type Make = Box<dyn Fn(&mut Observed)>;

    #[test]
    fn each_rule_fires_on_its_own_condition() {
        let cases: Vec<(&str, Make)> = vec![
            (
                "node_unreachable",
                Box::new(|o| o.unreachable = Some("PING failed: refused".into())),
            ),
            ("node_unreachable", Box::new(|o| o.probe_secs = Some(2.5))),
            (
                "cluster_node_down",
                Box::new(|o| o.members_down = vec!["n2".into()]),
            ),
            ("cluster_node_down", Box::new(|o| o.shards_short = vec![3])),
            ("high_memory", Box::new(|o| o.memory_ratio = 0.81)),
            (
                "workers_down",
                Box::new(|o| o.workers_missing = vec![(4, 61.0)]),
            ),
            (
                "workers_down",
                Box::new(|o| o.workers_stalled = vec![(1, 61.0)]),
            ),
            ("failed_events", Box::new(|o| o.failed_last_hour = 101)),
            (
                "system_memory_low",
                Box::new(|o| o.system_memory_free = Some(0.09)),
            ),
            ("high_load", Box::new(|o| o.load_per_core = Some(2.1))),
            ("health_critical", Box::new(|o| o.health_score = 49)),
        ];
        for (rule, make) in cases {
            let mut o = calm();
            make(&mut o);
            let mut e = engine();
            assert_eq!(fired(&e.evaluate(&o, 0)), vec![(rule, "firing")], "{rule}");
        }
        // At the threshold itself, nothing fires.
        let mut o = calm();
        o.memory_ratio = 0.8;
        o.failed_last_hour = 100;
        o.system_memory_free = Some(0.10);
        o.load_per_core = Some(2.0);
        o.health_score = 50;
        o.workers_stalled = vec![(1, 60.0)];
        o.workers_missing = vec![(2, 60.0)];
        assert!(engine().evaluate(&o, 0).is_empty());
    }

    #[test]
    fn cooldown_holds_a_rule_quiet_and_then_lets_it_fire_again() {
        let mut e = engine();
        let mut hot = calm();
        hot.memory_ratio = 0.95;
        let min = 60_000;
        assert_eq!(fired(&e.evaluate(&hot, 0)), vec![("high_memory", "firing")]);
        // Still true, inside the 15-minute cooldown: quiet.
        assert!(e.evaluate(&hot, 5 * min).is_empty());
        assert!(e.evaluate(&hot, 15 * min - 1).is_empty());
        assert_eq!(
            fired(&e.evaluate(&hot, 15 * min)),
            vec![("high_memory", "firing")]
        );
        let st = e
            .status()
            .into_iter()
            .find(|s| s.rule.name == "high_memory")
            .unwrap();
        assert_eq!((st.fired, st.suppressed, st.firing), (2, 2, true));
        // It clears, and comes back inside the cooldown: resolved, then quiet.
        assert_eq!(
            fired(&e.evaluate(&calm(), 16 * min)),
            vec![("high_memory", "resolved")]
        );
        assert!(e.evaluate(&hot, 17 * min).is_empty());
        assert_eq!(
            fired(&e.evaluate(&hot, 30 * min)),
            vec![("high_memory", "firing")]
        );
        let ids: Vec<u64> = e.history(10).iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![4, 3, 2, 1]);
    }

    #[test]
    fn settings_override_defaults_and_disable_rules() {
        let mut cfg = AlertsConfig::new();
        cfg.insert(
            "high_memory".into(),
            RuleSettings {
                threshold: Some(0.5),
                severity: Some("critical".into()),
                cooldown_secs: Some(1),
                enabled: None,
            },
        );
        cfg.insert(
            "high_load".into(),
            RuleSettings {
                enabled: Some(false),
                ..RuleSettings::default()
            },
        );
        assert!(validate(&cfg).is_ok());
        let mut e = Engine::new(rules(&cfg), 100, "n1".into());
        let mut o = calm();
        o.memory_ratio = 0.6;
        o.load_per_core = Some(9.0);
        let raised = e.evaluate(&o, 0);
        assert_eq!(fired(&raised), vec![("high_memory", "firing")]);
        assert_eq!(raised[0].severity, Severity::Critical);
        assert_eq!(
            fired(&e.evaluate(&o, 1000)),
            vec![("high_memory", "firing")]
        );
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let one = |name: &str, s: RuleSettings| {
            let mut cfg = AlertsConfig::new();
            cfg.insert(name.into(), s);
            validate(&cfg).unwrap_err().0
        };
        assert_eq!(
            one("hgh_memory", RuleSettings::default()),
            "alerts.hgh_memory"
        );
        assert_eq!(
            one(
                "high_load",
                RuleSettings {
                    severity: Some("urgent".into()),
                    ..RuleSettings::default()
                }
            ),
            "alerts.high_load.severity"
        );
        assert_eq!(
            one(
                "system_memory_low",
                RuleSettings {
                    threshold: Some(1.5),
                    ..RuleSettings::default()
                }
            ),
            "alerts.system_memory_low.threshold"
        );
        assert_eq!(
            one(
                "health_critical",
                RuleSettings {
                    threshold: Some(f64::NAN),
                    ..RuleSettings::default()
                }
            ),
            "alerts.health_critical.threshold"
        );
    }

    #[test]
    fn history_is_bounded() {
        let mut e = Engine::new(rules(&AlertsConfig::new()), 3, "n1".into());
        let mut hot = calm();
        hot.health_score = 10;
        for i in 0..10 {
            e.evaluate(&hot, i * 3_600_000);
        }
        let h = e.history(100);
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].id, 10);
    }
}
