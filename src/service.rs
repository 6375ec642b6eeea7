//! What the two daemons (`hostsetd`, `hostset-coordinator`) share as systemd services:
//! where their logs go, and the notification protocol (`sd_notify`) for `Type=notify`
//! readiness and the watchdog, without libsystemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing_subscriber::prelude::*;

/// Where and how a daemon logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// The journal when stderr is connected to it ($JOURNAL_STREAM, set by systemd), plain
    /// text otherwise.
    #[default]
    Auto,
    /// Structured entries straight to the journal.
    Journald,
    /// Plain text lines on stderr.
    Text,
}

/// Logs go to the journal under systemd (or when asked), to stderr otherwise, tagged with
/// `identifier`; the level from `$HOSTSET_LOG`, else `default`. True when they go to the
/// journal.
pub fn init_logging(identifier: &str, format: LogFormat, default: &str) -> bool {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOSTSET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let journald = match format {
        LogFormat::Journald => true,
        LogFormat::Text => false,
        LogFormat::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    if journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                registry
                    .with(layer.with_syslog_identifier(identifier.to_string()))
                    .init();
                return true;
            }
            Err(e) => eprintln!("{identifier}: journald unavailable ({e}); logging to stderr"),
        }
    }
    registry
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    false
}

/// Send `state` (e.g. `READY=1`) to the service manager. Does nothing when
/// not started by systemd with `Type=notify`; failures are only logged.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Half the watchdog timeout systemd asks for (`$WATCHDOG_USEC`, for this
/// process per `$WATCHDOG_PID`), or None without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("hostset-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test is the only one touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
