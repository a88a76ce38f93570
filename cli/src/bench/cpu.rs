//! CPU time of a run: this process plus every process of the database server (backends,
//! autovacuum, WAL writer...), read from Linux's `/proc`.
//!
//! On a machine with fewer cores than busy threads, throughput is bound by CPU, so CPU time per
//! unit of work tells the same thing as throughput; unlike wall time, it does not count the time
//! a process waited for a core that another program (or the hypervisor) held. The bench reports
//! both. Needs the server on this machine and `/proc` readable; otherwise there is no figure.

use std::time::Duration;

use pgbroker::postgres::Client;

/// Linux reports process times in clock ticks of 1/100 s (`USER_HZ`, fixed at 100 for
/// user-space interfaces on every architecture Linux runs on today).
const TICKS_PER_SECOND: u64 = 100;

/// Reads the CPU time of this process and of one PostgreSQL server's processes.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    postmaster: u32,
}

impl CpuMeter {
    /// The meter for the server `client` is connected to: the parent of its backend process.
    /// `None` when the server is not on this machine or `/proc` cannot be read.
    pub fn for_server(client: &mut Client) -> Option<CpuMeter> {
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .ok()?
            .get(0);
        let backend = ProcStat::read(&backend.to_string())?;
        // The backend must really be a child of a postgres process, not a pid that happens to
        // exist here while the server runs elsewhere.
        let postmaster = ProcStat::read(&backend.ppid.to_string())?;
        (backend.comm == "postgres" && postmaster.comm == "postgres").then_some(CpuMeter {
            postmaster: backend.ppid,
        })
    }

    /// CPU time (user + system) used so far by this process, the postmaster, its live children
    /// and the children it has reaped (a backend that exits moves its time to the postmaster's
    /// reaped-children counters, so a connection closed mid-run still counts).
    pub fn now(&self) -> Option<Duration> {
        let me = ProcStat::read("self")?;
        let postmaster = ProcStat::read(&self.postmaster.to_string())?;
        let mut ticks = me.own_ticks() + postmaster.own_ticks() + postmaster.reaped_ticks;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // A process may exit between the listing and the read: skip it.
            if let Some(p) = ProcStat::read(pid).filter(|p| p.ppid == self.postmaster) {
                ticks += p.own_ticks() + p.reaped_ticks;
            }
        }
        Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
    }
}

/// The fields of `/proc/<pid>/stat` the meter needs.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    comm: String,
    ppid: u32,
    user_ticks: u64,
    system_ticks: u64,
    /// User + system time of reaped children.
    reaped_ticks: u64,
}

impl ProcStat {
    fn read(pid: &str) -> Option<ProcStat> {
        ProcStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so the fields are
    /// counted from the last `)`; utime, stime, cutime and cstime are fields 14 to 17.
    fn parse(stat: &str) -> Option<ProcStat> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_owned();
        let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
        let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
        Some(ProcStat {
            comm,
            ppid: u32::try_from(field(4)?).ok()?,
            user_ticks: field(14)?,
            system_ticks: field(15)?,
            reaped_ticks: field(16)? + field(17)?,
        })
    }

    fn own_ticks(&self) -> u64 {
        self.user_ticks + self.system_ticks
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let line = "4242 (post gres) x) S 17 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 30 7 3 20 0 1 0 123 456 789";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                comm: "post gres) x".into(),
                ppid: 17,
                user_ticks: 250,
                system_ticks: 30,
                reaped_ticks: 10,
            })
        );
        assert_eq!(ProcStat::parse("4242 (cut short) S 1"), None);
    }

    #[test]
    fn this_process_has_a_stat() {
        let me = ProcStat::read("self").expect("/proc/self/stat");
        assert!(!me.comm.is_empty());
    }
}
