//! Network partitions on real infrastructure: a network namespace joined to the host by a veth
//! pair, which the runner creates, cuts, heals and removes itself (`ip netns`, `ip link` from
//! iproute2, `nft` from nftables). Services started inside the namespace reach the host's
//! dependencies only over the veth pair (through proxies listening on the host's end), and
//! clients reach them only over it. A cut is an nftables table inside the namespace that drops
//! every packet coming in or going out over the pair: nothing is refused and no route changes,
//! so open connections hang until their own timeouts and new ones get no answer, as in a real
//! partition. The heal deletes the table.
//!
//! Needs CAP_NET_ADMIN (root in the sandbox) and nftables. Where namespaces or nftables cannot
//! be used, [`Netns::create`] says why and the run is skipped with that message (exit code 6),
//! never passed.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::RealError;
use super::procs::Spec;

/// The nftables table of a cut, inside the namespace (gone with it).
pub const CUT_TABLE: &str = "testbed_cut";

/// A namespace and its veth pair.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// The namespace's end of the veth pair.
    pub ns_if: String,
    /// The host's end of the veth pair.
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    /// The namespace's address (its end of the pair).
    pub ns_ip: Ipv4Addr,
    cut: Mutex<bool>,
}

/// Runs `ip ARGS`; the error carries what `ip` printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Netns {
    /// Creates namespace `tb<tag>` with a veth pair on a /30 of 10.201.0.0/16 drawn from `tag`
    /// (a run's process id: concurrent runs get their own). A namespace of that name left by a
    /// crashed run is removed first.
    ///
    /// # Errors
    /// [`RealError::Skipped`] when the machine does not allow it (no `ip`, no CAP_NET_ADMIN).
    pub fn create(tag: u32) -> Result<Netns, RealError> {
        let index = tag % 16_384;
        let base = Ipv4Addr::new(10, 201, (index / 64) as u8, ((index % 64) * 4) as u8).to_bits();
        let netns = Netns {
            name: format!("tb{tag}"),
            ns_if: format!("tbn{tag}"),
            host_if: format!("tbh{tag}"),
            host_ip: Ipv4Addr::from_bits(base + 1),
            ns_ip: Ipv4Addr::from_bits(base + 2),
            cut: Mutex::new(false),
        };
        let ns_if = netns.ns_if.clone();
        let _ = ip(&["netns", "del", &netns.name]);
        let _ = ip(&["link", "del", &netns.host_if]);
        ip(&["netns", "add", &netns.name]).map_err(|e| {
            RealError::Skipped(format!("this machine does not allow network namespaces ({e}); partitions need root"))
        })?;
        let host_cidr = format!("{}/30", netns.host_ip);
        let ns_cidr = format!("{}/30", netns.ns_ip);
        let steps: [&[&str]; 7] = [
            &["link", "add", &netns.host_if, "type", "veth", "peer", "name", &ns_if],
            &["link", "set", &ns_if, "netns", &netns.name],
            &["addr", "add", &host_cidr, "dev", &netns.host_if],
            &["link", "set", &netns.host_if, "up"],
            &["netns", "exec", &netns.name, "ip", "addr", "add", &ns_cidr, "dev", &ns_if],
            &["netns", "exec", &netns.name, "ip", "link", "set", &ns_if, "up"],
            &["netns", "exec", &netns.name, "ip", "link", "set", "lo", "up"],
        ];
        for step in steps {
            // Dropping `netns` removes what was made so far. The namespace could be made, so a
            // failure here is a setup error, not a machine that cannot do it.
            ip(step).map_err(|e| RealError::Setup(format!("could not set up the namespace's network: {e}")))?;
        }
        ip(&["netns", "exec", &netns.name, "nft", "list", "tables"]).map_err(|e| {
            RealError::Skipped(format!("nftables cannot be used in a network namespace here ({e}); install nftables"))
        })?;
        Ok(netns)
    }

    /// A role's spec run inside the namespace, its port checked on the namespace's address.
    pub fn wrap(&self, spec: Spec) -> Spec {
        let mut args = vec!["netns".to_string(), "exec".into(), self.name.clone(), spec.program.display().to_string()];
        args.extend(spec.args);
        Spec { program: "ip".into(), args, host: Some(self.ns_ip.to_string()), ..spec }
    }

    /// Cuts the namespace off: every packet in or out over the pair is dropped, both ways.
    pub fn cut(&self) -> Result<(), RealError> {
        let rules = format!(
            "add table inet {CUT_TABLE}; \
             add chain inet {CUT_TABLE} in {{ type filter hook input priority 0; policy accept; }}; \
             add rule inet {CUT_TABLE} in iifname {ns_if} drop; \
             add chain inet {CUT_TABLE} out {{ type filter hook output priority 0; policy accept; }}; \
             add rule inet {CUT_TABLE} out oifname {ns_if} drop",
            ns_if = self.ns_if
        );
        ip(&["netns", "exec", &self.name, "nft", &rules]).map_err(RealError::Setup)?;
        *self.cut.lock().expect("not poisoned") = true;
        Ok(())
    }

    /// Joins it again.
    pub fn heal(&self) -> Result<(), RealError> {
        ip(&["netns", "exec", &self.name, "nft", "delete", "table", "inet", CUT_TABLE]).map_err(RealError::Setup)?;
        *self.cut.lock().expect("not poisoned") = false;
        Ok(())
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.lock().expect("not poisoned")
    }
}

impl Drop for Netns {
    /// Removing the namespace removes its end of the pair, and with it the host's.
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!(error = %e, "namespace not removed");
        }
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
