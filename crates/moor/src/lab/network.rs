//! Network partitions on loopback, with `tc`.
//!
//! # How the cut works
//!
//! Every lab member has its own loopback alias and binds its outgoing connections to it, so a packet on
//! `lo` says which member sent it and which one receives it. A partition installs, on the `ingress` qdisc of
//! `lo`, one `u32` filter per direction and per peer connection, each matching source address, destination
//! address and the listening port of the connection (so only this lab's traffic matches, even when another
//! lab uses the same aliases with other ports):
//!
//! ```text
//! isolated ──▶ peer:port        peer:port ──▶ isolated        (connections the isolated node opened)
//! peer ──▶ isolated:port        isolated:port ──▶ peer        (connections the peers opened)
//! ```
//!
//! A matching packet is redirected (`action mirred egress redirect`) to `moor<base_port>`, an `ifb` device
//! that is kept down, where the kernel drops it ("tc mirred to Houston: device ... is down" in the kernel
//! log, rate-limited). Nothing is answered: connections hang as on a real partition (no RST), until TCP or
//! the application times out. The peers are the other data nodes and the Sentinels; the apps and the
//! operator (`redis-cli`, the status checks) still reach the isolated node, because their connections come
//! from 127.0.0.1, so an isolated master keeps being asked for writes, and `min-replicas-to-write` is what
//! makes it refuse them.
//!
//! Why not a `prio` qdisc with `action drop`: this kernel has neither `sch_prio`, `sch_netem` nor `act_gact`
//! built in (see `/proc/config.gz`); `sch_ingress`, `cls_u32`, `act_mirred` and `ifb` are. The ingress hook
//! also leaves the rest of the loopback traffic alone (no queueing discipline on its egress path). The
//! `u32` port matches assume IP headers without options, which is what loopback TCP sends.
//!
//! Filters use the lab's base port as their `pref`, so healing deletes exactly this lab's filters; the
//! ingress qdisc is deleted only when no filter is left on it (another lab may be partitioned too). Healing
//! is idempotent and runs on [`Partition::heal`], when a [`Partition`] is dropped, and on `lab down`.
//! Needs root (`CAP_NET_ADMIN`).

use std::net::SocketAddrV4;
use std::process::Command;

use anyhow::Context as _;

use super::process;

/// The filters' parent: the ingress qdisc's fixed handle.
const INGRESS: &str = "ffff:";

/// The name of the (down) device a lab's dropped packets are sent to.
pub(crate) fn drop_device(base_port: u16) -> String {
    format!("moor{base_port}")
}

/// The `tc -batch` lines that cut `isolated` off from `peers`.
pub(crate) fn cut_commands(base_port: u16, isolated: SocketAddrV4, peers: &[SocketAddrV4]) -> Vec<String> {
    let device = drop_device(base_port);
    let filter = |src: &std::net::Ipv4Addr, dst: &std::net::Ipv4Addr, port_match: String| {
        format!(
            "filter add dev lo parent {INGRESS} pref {base_port} protocol ip u32 \
             match ip src {src}/32 match ip dst {dst}/32 {port_match} \
             action mirred egress redirect dev {device}"
        )
    };
    let (a, a_port) = (isolated.ip(), isolated.port());
    let mut lines = Vec::new();
    for peer in peers {
        let (p, p_port) = (peer.ip(), peer.port());
        // Connections the isolated node opened to the peer's listener, both directions.
        lines.push(filter(a, p, format!("match ip dport {p_port} 0xffff")));
        lines.push(filter(p, a, format!("match ip sport {p_port} 0xffff")));
        // Connections the peer opened to the isolated node's listener, both directions.
        lines.push(filter(p, a, format!("match ip dport {a_port} 0xffff")));
        lines.push(filter(a, p, format!("match ip sport {a_port} 0xffff")));
    }
    lines
}

/// Runs `tc`/`ip` with `args`; the error carries its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (iproute2: apt-get install -y iproute2)"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {program}"))?;
    } else {
        drop(child.stdin.take());
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        anyhow::bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs the cut (see the module documentation). Blocking (runs `ip` and `tc`).
pub(crate) fn cut(base_port: u16, isolated: SocketAddrV4, peers: &[SocketAddrV4]) -> anyhow::Result<()> {
    if !process::is_root() {
        anyhow::bail!("a partition needs root (it installs tc filters on lo): run moor as root");
    }
    let device = drop_device(base_port);
    if run("ip", &["link", "show", &device], None).is_err() {
        run("ip", &["link", "add", &device, "type", "ifb"], None)
            .context("creating the drop device (needs an ifb-capable kernel)")?;
    }
    if !has_ingress()?
        && let Err(e) = run("tc", &["qdisc", "add", "dev", "lo", "ingress"], None)
        // Another lab may have added it meanwhile.
        && !has_ingress()?
    {
        return Err(e.context("adding the ingress qdisc to lo"));
    }
    let batch = cut_commands(base_port, isolated, peers).join("\n") + "\n";
    if let Err(e) = run("tc", &["-batch", "-"], Some(&batch)) {
        let _ = heal(base_port);
        return Err(e.context("installing the partition filters"));
    }
    Ok(())
}

/// Whether `lo` has an ingress qdisc.
fn has_ingress() -> anyhow::Result<bool> {
    Ok(run("tc", &["qdisc", "show", "dev", "lo"], None)?.contains("qdisc ingress"))
}

/// Whether this lab's filters are installed.
pub(crate) fn is_cut(base_port: u16) -> bool {
    filters(base_port).is_ok_and(|text| !text.trim().is_empty())
}

/// This lab's filters as `tc filter show` lists them (empty when none).
pub(crate) fn filters(base_port: u16) -> anyhow::Result<String> {
    if !has_ingress()? {
        return Ok(String::new());
    }
    lab_filters("show", base_port)
}

/// `tc filter <verb>` (`show` or `del`) on this lab's filters: those whose `pref` is its base port.
fn lab_filters(verb: &str, base_port: u16) -> anyhow::Result<String> {
    let pref = base_port.to_string();
    run(
        "tc",
        &["filter", verb, "dev", "lo", "parent", INGRESS, "pref", &pref],
        None,
    )
}

/// Removes this lab's filters, its drop device, and the ingress qdisc if no filter is left on it. Does
/// nothing (and needs no root) when there is nothing to remove. Blocking.
pub(crate) fn heal(base_port: u16) -> anyhow::Result<()> {
    let mut first_error = None;
    if is_cut(base_port)
        && let Err(e) = lab_filters("del", base_port)
    {
        first_error.get_or_insert(e);
    }
    if has_ingress().unwrap_or(false)
        && run("tc", &["filter", "show", "dev", "lo", "parent", INGRESS], None)
            .is_ok_and(|rest| rest.trim().is_empty())
        && let Err(e) = run("tc", &["qdisc", "del", "dev", "lo", "ingress"], None)
    {
        first_error.get_or_insert(e);
    }
    let device = drop_device(base_port);
    if run("ip", &["link", "show", &device], None).is_ok()
        && let Err(e) = run("ip", &["link", "del", &device], None)
    {
        first_error.get_or_insert(e);
    }
    match first_error {
        Some(e) => Err(e.context("healing the partition")),
        None => Ok(()),
    }
}

/// A network partition in place: one data node cut off from the other data nodes and from the Sentinels
/// (not from the apps). [`Partition::heal`] removes it; dropping it unhealed heals it too (blocking briefly),
/// so a failing test or scenario never leaves a cut behind; `lab down` removes it as well.
///
/// The cut is a set of `tc` `u32` filters on the ingress qdisc of `lo` (needs root), matching the isolated
/// node's loopback alias, each peer's alias and the port of their connection, in both directions, and
/// dropping the packets (redirected to `moor<base_port>`, an `ifb` device kept down). Nothing answers: the
/// connections hang without a reset, as on a real partition, until TCP or Redis times them out. The apps and
/// the operator connect from 127.0.0.1 and still reach the node, so an isolated master is still asked for
/// writes; it refuses them (`NOREPLICAS`) once its replicas lag more than `min-replicas-max-lag` (2 s).
#[derive(Debug)]
pub struct Partition {
    /// The lab's base port (the filters' `pref`).
    pub(crate) base_port: u16,
    /// The isolated node.
    pub(crate) isolated: String,
    /// The lab directory, to clear the partition from `state.json`.
    pub(crate) dir: std::path::PathBuf,
    /// Set once healed.
    pub(crate) healed: bool,
}

impl Partition {
    /// The isolated data node (`host:port`).
    pub fn isolated(&self) -> &str {
        &self.isolated
    }

    /// Removes the cut: the node talks to its peers again (stalled TCP connections resume on their next
    /// retransmission, new ones connect at once).
    pub async fn heal(mut self) -> anyhow::Result<()> {
        self.healed = true;
        let (base_port, dir) = (self.base_port, self.dir.clone());
        tokio::task::spawn_blocking(move || {
            heal(base_port)?;
            super::state::set_partition(&dir, None)
        })
        .await
        .context("the heal task panicked")?
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if !self.healed {
            if let Err(e) = heal(self.base_port) {
                eprintln!(
                    "moor lab: could not heal the partition of {}: {e:#}",
                    self.isolated
                );
            }
            let _ = super::state::set_partition(&self.dir, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_matches_both_directions_of_both_kinds_of_connection() {
        let isolated: SocketAddrV4 = "127.0.0.21:7131".parse().unwrap();
        let peers: Vec<SocketAddrV4> = ["127.0.0.22:7132", "127.0.0.31:7141"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let lines = cut_commands(7100, isolated, &peers);
        assert_eq!(lines.len(), 8);
        let expect = [
            "match ip src 127.0.0.21/32 match ip dst 127.0.0.22/32 match ip dport 7132 0xffff",
            "match ip src 127.0.0.22/32 match ip dst 127.0.0.21/32 match ip sport 7132 0xffff",
            "match ip src 127.0.0.22/32 match ip dst 127.0.0.21/32 match ip dport 7131 0xffff",
            "match ip src 127.0.0.21/32 match ip dst 127.0.0.22/32 match ip sport 7131 0xffff",
            "match ip src 127.0.0.31/32 match ip dst 127.0.0.21/32 match ip dport 7131 0xffff",
        ];
        for part in expect {
            assert!(
                lines.iter().any(|l| l.contains(part)),
                "no filter with {part:?}: {lines:#?}"
            );
        }
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("filter add dev lo parent ffff: pref 7100 "))
        );
        assert!(
            lines
                .iter()
                .all(|l| l.ends_with("action mirred egress redirect dev moor7100"))
        );
    }
}
