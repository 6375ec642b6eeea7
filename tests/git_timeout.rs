//! A remote that accepts the connection and then says nothing: the poll fails after
//! libgit2's server timeout instead of hanging the follower. A test binary of its own:
//! the timeouts are process-wide and set before any other thread uses libgit2.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hostset::config_file::{GitRef, GitSource, Transport};
use hostset::gitsource::{Follower, set_network_timeouts};

#[test]
fn a_remote_that_stops_answering_fails_the_poll() {
    set_network_timeouts(Duration::from_secs(2), Duration::from_secs(2));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let silent = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // Accept and hold every connection, never answer.
            let mut held = Vec::new();
            while !stop.load(Ordering::Acquire) {
                if let Ok((s, _)) = listener.accept() {
                    held.push(s);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let state = std::env::temp_dir().join(format!("hostset-git-timeout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut f = Follower::new(
        GitSource {
            url: format!("git://127.0.0.1:{port}/fleet.git"),
            transport: Transport::Git,
            reference: GitRef::Branch("main".into()),
            subdirectory: String::new(),
            poll_interval: Duration::from_secs(30),
            ssh_key_file: None,
            known_hosts_file: PathBuf::from("/nonexistent"),
            token_file: None,
            username: "git".into(),
            allowed_signers_file: None,
        },
        &state,
    );
    f.poll();
    let s = f.snapshot();
    stop.store(true, Ordering::Release);
    silent.join().unwrap();
    let _ = std::fs::remove_dir_all(&state);
    assert_eq!(s.commit, "");
    assert!(s.unsettled);
    assert!(
        s.report.fetch_error.starts_with(&format!(
            "cannot fetch branch main from git://127.0.0.1:{port}/"
        )),
        "{:?}",
        s.report.fetch_error
    );
    assert!(
        s.report.fetch_error.contains("timed out") || s.report.fetch_error.contains("timeout"),
        "{:?}",
        s.report.fetch_error
    );
}
