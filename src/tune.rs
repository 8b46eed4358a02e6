//! `flumen tune check|apply|list`: host profiles (`tuning/profiles/*.toml`, compiled in) compared
//! with this machine and a broker config, and the kernel settings among them applied.
//!
//! `check` reads every sysctl and sysfs file of the profile (globs expanded) and prints current
//! against recommended; `apply` writes the sysctl and sysfs values that fail the check (root;
//! `--dry-run` prints the commands instead). Broker, IRQ and manual settings are advice.

use crate::config::Config;
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The profiles shipped with the binary.
pub const PROFILES: &[(&str, &str)] = &[
    ("nvme-10g", include_str!("../tuning/profiles/nvme-10g.toml")),
    ("nvme-25g", include_str!("../tuning/profiles/nvme-25g.toml")),
    ("jbod-10g", include_str!("../tuning/profiles/jbod-10g.toml")),
    ("laptop", include_str!("../tuning/profiles/laptop.toml")),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    description: String,
    extends: Option<String>,
    #[serde(default)]
    setting: Vec<Setting>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    pub name: String,
    pub kind: String,
    pub path: Option<String>,
    pub value: String,
    pub compare: Option<String>,
    pub reason: String,
}

/// A profile's settings, with those of the profile it extends (same name: replaced in place).
pub fn load(name: &str) -> anyhow::Result<(String, Vec<Setting>)> {
    let text = PROFILES
        .iter()
        .find(|p| p.0 == name)
        .map(|p| p.1)
        .ok_or_else(|| {
            let names: Vec<&str> = PROFILES.iter().map(|p| p.0).collect();
            anyhow!("no profile {name}; there are {}", names.join(", "))
        })?;
    let p: Profile = toml::from_str(text).with_context(|| format!("profile {name}"))?;
    let mut settings = match &p.extends {
        Some(parent) => load(parent)?.1,
        None => Vec::new(),
    };
    for s in p.setting {
        match settings.iter_mut().find(|x| x.name == s.name) {
            Some(slot) => *slot = s,
            None => settings.push(s),
        }
    }
    Ok((p.description, settings))
}

/// `*` in a file name matches any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len()).any(|i| wildcard(rest, &name[head.len() + i..]))
        }
    }
}

/// Every existing path matching `pattern` (globs in any component), sorted.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in Path::new(pattern).components().skip(1) {
        let part = part.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            if part.contains('*') {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for e in entries.flatten() {
                        if wildcard(&part, &e.file_name().to_string_lossy()) {
                            next.push(e.path());
                        }
                    }
                }
            } else {
                next.push(dir.join(&*part));
            }
        }
        found = next;
    }
    found.retain(|p| p.exists());
    found.sort();
    found
}

/// A file's value with runs of whitespace made one space.
fn read_value(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    Some(s.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn num(s: &str) -> Option<i128> {
    s.trim().parse().ok()
}

/// Whether `current` satisfies `want` under `compare`.
pub fn satisfies(current: &str, want: &str, compare: &str) -> bool {
    match compare {
        "min" => matches!((num(current), num(want)), (Some(c), Some(w)) if c >= w),
        "max" => matches!((num(current), num(want)), (Some(c), Some(w)) if c <= w),
        "contains" => current.contains(want),
        "first_field_min" => {
            let c: Vec<_> = current.split_whitespace().map(num).collect();
            let w: Vec<_> = want.split_whitespace().map(num).collect();
            c.len() == w.len()
                && c.iter()
                    .zip(&w)
                    .all(|p| matches!(p, (Some(c), Some(w)) if c >= w))
        }
        _ => current == want,
    }
}

/// What `apply` writes so that `current` satisfies the setting: never lowers a field.
fn value_to_write(current: &str, want: &str, compare: &str) -> String {
    match compare {
        "first_field_min" => {
            let c: Vec<&str> = current.split_whitespace().collect();
            want.split_whitespace()
                .enumerate()
                .map(|(i, w)| match (c.get(i).and_then(|x| num(x)), num(w)) {
                    (Some(c), Some(wn)) if c > wn => c.to_string(),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        }
        "contains" => want.trim_matches(|c| c == '[' || c == ']').to_string(),
        _ => want.to_string(),
    }
}

/// One line of the check.
pub struct Row {
    pub status: &'static str,
    pub name: String,
    pub target: String,
    pub current: String,
    pub want: String,
    /// For a failing sysctl/sysfs file: (path, value to write).
    pub fix: Option<(PathBuf, String)>,
}

/// The broker config as TOML keys, defaults filled in and resolved for this host as the
/// broker would resolve them (the tail cache from its memory and shards).
fn config_table(config: Option<&Path>) -> anyhow::Result<toml::Table> {
    let mut cfg = match config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    let shards = cfg.shard_count(crate::server::usable_cores().len());
    cfg.resolve_tail_cache(shards, crate::config::memory_bytes());
    Ok(toml::Table::try_from(&cfg)?)
}

pub fn check_rows(settings: &[Setting], config: Option<&Path>) -> anyhow::Result<Vec<Row>> {
    let table = config_table(config)?;
    let mut rows = Vec::new();
    for s in settings {
        let compare = s.compare.as_deref().unwrap_or("exact");
        let row = |status, target: String, current: String| Row {
            status,
            name: s.name.clone(),
            target,
            current,
            want: s.value.clone(),
            fix: None,
        };
        match s.kind.as_str() {
            "sysctl" | "sysfs" => {
                let pattern = s.path.as_deref().unwrap_or_default();
                let paths = expand(pattern);
                if paths.is_empty() {
                    rows.push(row("absent", pattern.to_string(), "-".into()));
                }
                for p in paths {
                    let Some(cur) = read_value(&p) else {
                        rows.push(row("unread", p.display().to_string(), "-".into()));
                        continue;
                    };
                    let ok = satisfies(&cur, &s.value, compare);
                    let mut r = row(
                        if ok { "ok" } else { "FAIL" },
                        p.display().to_string(),
                        cur.clone(),
                    );
                    if !ok {
                        r.fix = Some((p.clone(), value_to_write(&cur, &s.value, compare)));
                    }
                    rows.push(r);
                }
            }
            "broker" => {
                let cur = match table.get(&s.name) {
                    Some(toml::Value::String(v)) => v.clone(),
                    Some(v) => v.to_string(),
                    None => "(unset)".into(),
                };
                let ok = satisfies(&cur, &s.value, compare);
                rows.push(row(
                    if ok { "ok" } else { "FAIL" },
                    format!("flumen.toml {}", s.name),
                    cur,
                ));
            }
            "irq" | "manual" => {
                let shown = s
                    .path
                    .as_deref()
                    .map(|p| format!("{} file(s) at {p}", expand(p).len()))
                    .unwrap_or_else(|| "-".into());
                rows.push(row("advice", s.kind.clone(), shown));
            }
            k => bail!("setting {}: unknown kind {k}", s.name),
        }
    }
    Ok(rows)
}

fn print_rows(rows: &[Row], settings: &[Setting], verbose: bool) {
    println!(
        "{:<7} {:<34} {:<28} {:<28} target",
        "status", "setting", "current", "recommended"
    );
    let cut = |s: &str, n: usize| {
        if s.chars().count() > n {
            format!("{}…", s.chars().take(n - 1).collect::<String>())
        } else {
            s.to_string()
        }
    };
    for r in rows {
        println!(
            "{:<7} {:<34} {:<28} {:<28} {}",
            r.status,
            cut(&r.name, 34),
            cut(&r.current, 28),
            cut(&r.want, 28),
            r.target
        );
        if verbose || r.status == "FAIL" || r.status == "advice" {
            if let Some(s) = settings.iter().find(|s| s.name == r.name) {
                if r.status == "advice" {
                    println!("        do: {}", s.value);
                }
                println!("        why: {}", s.reason);
            }
        }
    }
    let fails = rows.iter().filter(|r| r.status == "FAIL").count();
    let oks = rows.iter().filter(|r| r.status == "ok").count();
    println!(
        "{oks} ok, {fails} to change, {} absent here, {} by hand",
        rows.iter().filter(|r| r.status == "absent").count(),
        rows.iter().filter(|r| r.status == "advice").count()
    );
}

pub fn check(profile: &str, config: Option<&Path>, verbose: bool) -> anyhow::Result<()> {
    let (description, settings) = load(profile)?;
    println!("profile {profile}: {description}\n");
    let rows = check_rows(&settings, config)?;
    print_rows(&rows, &settings, verbose);
    Ok(())
}

pub fn apply(profile: &str, config: Option<&Path>, dry_run: bool) -> anyhow::Result<()> {
    let (_, settings) = load(profile)?;
    let rows = check_rows(&settings, config)?;
    let fixes: Vec<&Row> = rows.iter().filter(|r| r.fix.is_some()).collect();
    if !dry_run && unsafe { libc::geteuid() } != 0 {
        bail!("writing /proc/sys and /sys needs root; --dry-run prints the commands");
    }
    let mut failed = 0;
    for r in &fixes {
        let (path, value) = r.fix.as_ref().expect("filtered");
        if dry_run {
            println!("echo '{value}' > {}", path.display());
            continue;
        }
        match std::fs::write(path, format!("{value}\n")) {
            Ok(()) => println!("set {} = {value}", path.display()),
            Err(e) => {
                failed += 1;
                eprintln!("could not set {} = {value}: {e}", path.display());
            }
        }
    }
    for r in rows
        .iter()
        .filter(|r| r.status == "FAIL" && r.fix.is_none())
    {
        println!("# in flumen.toml: {} = {}", r.name, r.want);
    }
    for s in settings
        .iter()
        .filter(|s| s.kind == "irq" || s.kind == "manual")
    {
        println!("# by hand ({}): {}", s.name, s.value);
    }
    if fixes.is_empty() {
        println!("# nothing to write: every sysctl and sysfs setting already passes");
    }
    if failed > 0 {
        bail!("{failed} setting(s) could not be written");
    }
    Ok(())
}

pub fn list() {
    for (name, _) in PROFILES {
        match load(name) {
            Ok((d, s)) => println!("{name:<10} {} settings  {d}", s.len()),
            Err(e) => println!("{name:<10} unreadable: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_loads_and_names_real_broker_keys() {
        let keys = config_table(None).unwrap();
        for (name, _) in PROFILES {
            let (_, settings) = load(name).unwrap();
            assert!(!settings.is_empty(), "{name}");
            for s in &settings {
                let compare = s.compare.as_deref().unwrap_or("exact");
                assert!(
                    ["exact", "min", "max", "contains", "first_field_min"].contains(&compare),
                    "{name}/{}: compare {compare}",
                    s.name
                );
                match s.kind.as_str() {
                    "broker" => assert!(
                        keys.contains_key(&s.name) || s.name == "advertise",
                        "{name}: {} is not a config key",
                        s.name
                    ),
                    "sysctl" | "sysfs" => assert!(s.path.is_some(), "{name}/{}", s.name),
                    "irq" | "manual" => {}
                    k => panic!("{name}/{}: kind {k}", s.name),
                }
            }
        }
        // nvme-25g replaces nvme-10g's settings by name and keeps the rest.
        let (_, base) = load("nvme-10g").unwrap();
        let (_, fast) = load("nvme-25g").unwrap();
        assert!(fast.len() >= base.len());
        assert!(base.iter().all(|b| fast.iter().any(|f| f.name == b.name)));
    }

    #[test]
    fn comparisons_and_the_values_apply_writes() {
        assert!(satisfies("212992", "212992", "min"));
        assert!(!satisfies("4096", "212992", "min"));
        assert!(satisfies("10", "60", "max"));
        assert!(!satisfies("abc", "1", "min"));
        assert!(satisfies("[none] mq-deadline", "[none]", "contains"));
        assert!(!satisfies("none [mq-deadline]", "[none]", "contains"));
        assert!(satisfies(
            "4096 131072 6291456",
            "4096 87380 6291456",
            "first_field_min"
        ));
        assert!(!satisfies(
            "4096 16384 4194304",
            "4096 87380 6291456",
            "first_field_min"
        ));
        // Never lowers a field that is already higher.
        assert_eq!(
            value_to_write(
                "8192 16384 4194304",
                "4096 87380 6291456",
                "first_field_min"
            ),
            "8192 87380 6291456"
        );
        assert_eq!(value_to_write("x", "[none]", "contains"), "none");
    }

    #[test]
    fn globs_expand_to_existing_files() {
        let d = tempfile::tempdir().unwrap();
        for n in ["sda", "sdb", "nvme0n1"] {
            std::fs::create_dir_all(d.path().join(n).join("queue")).unwrap();
            std::fs::write(d.path().join(n).join("queue/scheduler"), "[none]\n").unwrap();
        }
        let pat = format!("{}/sd*/queue/scheduler", d.path().display());
        let got = expand(&pat);
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with("sda/queue/scheduler"));
        assert!(expand(&format!("{}/md*/queue/scheduler", d.path().display())).is_empty());
        assert!(wildcard("rx-*", "rx-0") && !wildcard("rx-*", "tx-0"));
        assert!(wildcard("*", "anything") && wildcard("a*b*c", "aXXbYc"));
    }
}
