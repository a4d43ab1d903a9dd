//! System information for the Health Monitor page and the log: load, memory
//! and uptime. Information only: nothing here sets a health level.

use serde::Serialize;
use sysinfo::{MemoryRefreshKind, RefreshKind, System};

use super::disk::format_bytes;

/// A snapshot of the machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemInfo {
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// RAM in bytes.
    pub memory_total: u64,
    /// RAM available for new work without swapping, in bytes (`MemAvailable`).
    pub memory_available: u64,
    pub uptime_secs: u64,
}

/// Read the load averages, RAM and uptime. A figure that cannot be read is 0.
pub fn read() -> SystemInfo {
    let load = System::load_average()
        .map(|l| [l.one, l.five, l.fifteen])
        .unwrap_or_default();
    let (memory_total, memory_available) = System::new_with_specifics(
        RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()),
    )
    .map(|s| (s.total_memory(), s.available_memory()))
    .unwrap_or_default();
    SystemInfo {
        load,
        memory_total,
        memory_available,
        uptime_secs: System::uptime().unwrap_or_default(),
    }
}

impl SystemInfo {
    /// One line for people: "System: load 0.12 0.08 0.01, memory 1.2 GiB
    /// free of 3.8 GiB, up 3 d 4 h".
    pub fn line(&self) -> String {
        let [one, five, fifteen] = self.load;
        format!(
            "System: load {one:.2} {five:.2} {fifteen:.2}, memory {} free of {}, up {}",
            format_bytes(self.memory_available),
            format_bytes(self.memory_total),
            uptime_text(self.uptime_secs)
        )
    }
}

/// "3 d 4 h", "4 h 12 min", "12 min", "42 s".
fn uptime_text(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn line_reads_like_the_example() {
        let info = SystemInfo {
            load: [0.12, 0.08, 0.01],
            memory_total: GIB * 38 / 10,
            memory_available: GIB * 12 / 10,
            uptime_secs: 3 * 86_400 + 4 * 3600 + 59 * 60,
        };
        assert_eq!(
            info.line(),
            "System: load 0.12 0.08 0.01, memory 1.2 GiB free of 3.8 GiB, up 3 d 4 h"
        );
    }

    #[test]
    fn uptime_units() {
        assert_eq!(uptime_text(0), "0 s");
        assert_eq!(uptime_text(59), "59 s");
        assert_eq!(uptime_text(60), "1 min");
        assert_eq!(uptime_text(3599), "59 min");
        assert_eq!(uptime_text(3600 + 12 * 60 + 5), "1 h 12 min");
        assert_eq!(uptime_text(86_400), "1 d 0 h");
    }

    #[test]
    fn serializes_with_field_names() {
        let info = SystemInfo {
            load: [1.5, 1.0, 0.5],
            memory_total: 8,
            memory_available: 4,
            uptime_secs: 60,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"load":[1.5,1.0,0.5],"memory_total":8,"memory_available":4,"uptime_secs":60}"#
        );
    }

    #[test]
    fn reads_this_machine() {
        let info = read();
        assert!(info.memory_total > 0, "{info:?}");
        assert!(info.memory_available <= info.memory_total, "{info:?}");
        assert!(info.uptime_secs > 0, "{info:?}");
        assert!(
            info.load.iter().all(|l| l.is_finite() && *l >= 0.0),
            "{info:?}"
        );
        let line = info.line();
        assert!(line.starts_with("System: load "), "{line}");
        assert!(line.contains(" free of "), "{line}");
    }
}
