//! Where the two ends of a run are pinned. By default the bench takes two CPUs the machine
//! shows as separate cores: two hardware threads of one core share its execution units, so
//! the software of a hop runs slower there while a cache-line hand-off (the references) gets
//! faster, and a ratio measured there says more about the placement than about the code.
//! Every run reports how its two CPUs relate, as far as the kernel's topology files show it
//! (a virtual machine's vCPUs may still share a host core it cannot see).

use std::fmt;
use std::path::Path;

/// How two CPUs relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The same CPU.
    Same,
    /// Two hardware threads of one core.
    SmtSiblings,
    /// Two separate cores.
    SeparateCores,
    /// The topology files are not there or not readable.
    Unknown,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relation::Same => "the same CPU",
            Relation::SmtSiblings => "hardware threads of one core",
            Relation::SeparateCores => "separate cores",
            Relation::Unknown => "topology unknown",
        })
    }
}

/// Parses a kernel CPU list such as `0-3,8,10-11`; `None` when malformed.
fn parse_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                if b < a || b - a > 65536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// How `a` and `b` relate, from the topology files under `root` (`/sys/devices/system/cpu`).
fn relation_in(root: &Path, a: usize, b: usize) -> Relation {
    if a == b {
        return Relation::Same;
    }
    let path = root.join(format!("cpu{a}/topology/thread_siblings_list"));
    match std::fs::read_to_string(path).ok().as_deref().and_then(parse_list) {
        Some(siblings) if siblings.contains(&b) => Relation::SmtSiblings,
        Some(_) => Relation::SeparateCores,
        None => Relation::Unknown,
    }
}

/// How CPUs `a` and `b` of this machine relate.
pub fn relation(a: usize, b: usize) -> Relation {
    relation_in(Path::new("/sys/devices/system/cpu"), a, b)
}

/// Of `allowed` (in order), the first CPU and the first other one on a separate core; two
/// threads of one core only when no other pair exists; `None` with fewer than two CPUs.
fn pick(allowed: &[usize], relate: impl Fn(usize, usize) -> Relation) -> Option<(usize, usize)> {
    let (&first, rest) = allowed.split_first()?;
    let second = rest
        .iter()
        .copied()
        .find(|&c| matches!(relate(first, c), Relation::SeparateCores | Relation::Unknown))
        .or_else(|| rest.iter().copied().find(|&c| c != first))?;
    Some((first, second))
}

/// The default CPUs of a run: two of the CPUs this process may run on, on separate cores when
/// the machine has them; CPUs 0 and 1 when the allowed set cannot be read or has one CPU.
pub fn default_cpus() -> (usize, usize) {
    let mut allowed: Vec<usize> =
        core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    allowed.sort_unstable();
    pick(&allowed, relation).unwrap_or((0, 1))
}

/// The run's CPUs and their relation, for the report.
pub fn placement(cpus: (usize, usize)) -> serde_json::Value {
    serde_json::json!({
        "cpus": [cpus.0, cpus.1],
        "relation": relation(cpus.0, cpus.1).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_cpu_lists_and_refuses_malformed_ones() {
        assert_eq!(parse_list("0-2,8,10-11\n"), Some(vec![0, 1, 2, 8, 10, 11]));
        assert_eq!(parse_list("5"), Some(vec![5]));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("a-b"), None);
        assert_eq!(parse_list("0-99999999"), None);
    }

    #[test]
    fn relation_reads_the_sibling_list() {
        let root = std::env::temp_dir().join(format!("bw-topology-{}", std::process::id()));
        for (cpu, siblings) in [(0, "0,2"), (1, "1,3"), (2, "0,2"), (3, "1,3")] {
            let dir = root.join(format!("cpu{cpu}/topology"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("thread_siblings_list"), format!("{siblings}\n")).unwrap();
        }
        assert_eq!(relation_in(&root, 0, 2), Relation::SmtSiblings);
        assert_eq!(relation_in(&root, 0, 1), Relation::SeparateCores);
        assert_eq!(relation_in(&root, 1, 1), Relation::Same);
        assert_eq!(relation_in(&root, 7, 1), Relation::Unknown);
        // Siblings numbered next to each other (0,2 | 1,3 here, as some machines do): the
        // default pair skips the sibling for a separate core.
        let relate = |a, b| relation_in(&root, a, b);
        assert_eq!(pick(&[0, 2, 1, 3], relate), Some((0, 1)));
        assert_eq!(pick(&[0, 2], relate), Some((0, 2)), "only siblings allowed: take them");
        assert_eq!(pick(&[3], relate), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
