//! Cluster mode: one graph on several `tickflow` processes, on Timely's own cluster
//! communication (`CommunicationConfig::Cluster`).
//!
//! Every process runs the same graph with the same number of worker threads; worker indices
//! are global (process `p`'s workers are `p * threads ..`). Exchanges cross processes as bincode
//! over TCP, so everything that crosses one means the same in every process (names, not
//! process-local ids). A file source is read by one worker of the whole cluster, Kafka
//! partitions are spread over every worker of every process, and every sink is written by the
//! last worker (of the last process): outputs are those of a one-process run.

use std::path::Path;

use crate::error::RuleError;

/// This process's place in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index, `0 .. addresses.len()`.
    pub process: usize,
    /// `host:port` of every process, in process order (process `i` listens on the `i`-th).
    pub addresses: Vec<String>,
}

impl Cluster {
    /// The cluster of `processes` processes whose addresses are in `hosts` (one `host:port`
    /// per line; blank lines and `#` comments are skipped), as process `process`.
    pub fn from_hosts_file(
        hosts: &Path,
        processes: usize,
        process: usize,
    ) -> Result<Self, RuleError> {
        let text = std::fs::read_to_string(hosts)
            .map_err(|e| RuleError(format!("cannot read hosts file {}: {e}", hosts.display())))?;
        let addresses = parse_hosts(&text)
            .map_err(|(line, why)| RuleError(format!("{}:{line}: {why}", hosts.display())))?;
        Self::new(addresses, processes, process)
            .map_err(|e| RuleError(format!("{}: {e}", hosts.display())))
    }

    /// Checks that `addresses` name `processes` processes and that `process` is one of them.
    pub fn new(
        addresses: Vec<String>,
        processes: usize,
        process: usize,
    ) -> Result<Self, RuleError> {
        if processes == 0 {
            return Err("--processes must be at least 1".into());
        }
        if addresses.len() != processes {
            return Err(format!(
                "lists {} address(es) for {processes} process(es); give one `host:port` per \
                 process",
                addresses.len()
            )
            .into());
        }
        if process >= processes {
            return Err(format!(
                "process index {process} is not below the number of processes ({processes})"
            )
            .into());
        }
        Ok(Cluster { process, addresses })
    }

    /// The number of processes.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }
}

/// The addresses of a hosts file, or the 1-based line of the first bad one and why.
fn parse_hosts(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut addresses: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let bad = |why: &str| (i + 1, format!("`{entry}`: {why}"));
        let (host, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("the host is empty or has spaces"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
        if addresses.iter().any(|a| a == entry) {
            return Err(bad("listed twice"));
        }
        addresses.push(entry.to_string());
    }
    Ok(addresses)
}

/// The process index a Kubernetes StatefulSet pod's hostname carries: `tickflow-2` is 2.
pub fn ordinal_of_hostname(hostname: &str) -> Option<usize> {
    let (name, ordinal) = hostname.trim().rsplit_once('-')?;
    if name.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_lists_one_address_per_process() {
        let text = "# peers\n127.0.0.1:2101\n\n  127.0.0.1:2102  # second\n[::1]:2103\n";
        assert_eq!(
            parse_hosts(text).unwrap(),
            ["127.0.0.1:2101", "127.0.0.1:2102", "[::1]:2103"]
        );
        assert_eq!(
            parse_hosts("a:1\nb\n").unwrap_err(),
            (2, "`b`: expected host:port".to_string())
        );
        assert_eq!(parse_hosts("a:0").unwrap_err().0, 1);
        assert_eq!(parse_hosts("a:99999").unwrap_err().0, 1);
        assert!(parse_hosts("a:1\na:1")
            .unwrap_err()
            .1
            .contains("listed twice"));
    }

    #[test]
    fn the_process_count_and_index_must_match_the_addresses() {
        let two = vec!["a:1".to_string(), "b:2".to_string()];
        assert!(Cluster::new(two.clone(), 2, 1).is_ok());
        assert!(Cluster::new(two.clone(), 3, 0)
            .unwrap_err()
            .0
            .contains("2 address(es) for 3"));
        assert!(Cluster::new(two, 2, 2).unwrap_err().0.contains("index 2"));
    }

    #[test]
    fn a_statefulset_hostname_gives_the_process_index() {
        assert_eq!(ordinal_of_hostname("tickflow-0"), Some(0));
        assert_eq!(ordinal_of_hostname("my-tickflow-12"), Some(12));
        assert_eq!(ordinal_of_hostname("tickflow"), None);
        assert_eq!(ordinal_of_hostname("tickflow-"), None);
        assert_eq!(ordinal_of_hostname("tickflow-a1"), None);
    }
}
