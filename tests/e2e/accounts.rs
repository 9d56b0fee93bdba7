//! `shardbot accounts add|list|show|edit|test|remove` as an operator uses them, with
//! bybit-sim standing in for Bybit demo (it knows only its own keys): the file is made
//! owner-only, a file others can read is refused with the fix, a right key is accepted by
//! the exchange and a wrong secret refused, and no output or log line ever carries a
//! secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
};

use shardbot_e2e::{Stack, bin};

const SECRET: &str = "sim-demo-secret";
const WRONG: &str = "a-wrong-secret-123";

/// `shardbot accounts ARGS` with `stdin`, against the demo "exchange" at `rest_url`: (ok,
/// stdout + stderr).
fn accounts(stack: &Stack, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(bin("shardbot"))
        .arg("accounts")
        .args(args)
        .arg("--config")
        .arg(&stack.config)
        .env("SHARDBOT__EXCHANGE__ENVIRONMENT", "demo")
        .env("SHARDBOT__EXCHANGE__REST_URL", &stack.sim_url)
        .env(
            "SHARDBOT__EXCHANGE__ACCOUNTS_FILE",
            stack.path("api_accounts.json"),
        )
        .env_remove("SHARDBOT_API_SECRET")
        .current_dir(stack.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    shardbot_e2e::outcome(&out)
}

#[test]
fn accounts_are_added_tested_edited_and_removed_without_a_secret_shown() {
    let mut stack = Stack::new(
        "[sim]\nlisten = \"{sim_listen}\"\nsymbols = 10\nuniverse_file = \"\"\nuniverse_price_dir = \"\"\n",
    );
    let _ = stack.start_sim();
    let file = stack.path("api_accounts.json");
    let mut outputs = Vec::new();

    let (ok, out) = accounts(
        &stack,
        &[
            "add",
            "mydemo",
            "--environment",
            "demo",
            "--api-key",
            "sim-demo-key",
        ],
        &format!("{SECRET}\n"),
    );
    assert!(ok, "{out}");
    outputs.push(out);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the accounts file is owner-only");

    let (ok, out) = accounts(&stack, &["list"], "");
    assert!(
        ok && out.contains("mydemo") && out.contains("demo"),
        "{out}"
    );
    assert!(!out.contains("sim-demo-key"), "the key is masked: {out}");
    outputs.push(out);
    let (ok, out) = accounts(&stack, &["show", "mydemo"], "");
    assert!(ok && out.contains("mydemo"), "{out}");
    outputs.push(out);

    // The exchange accepts the key and its secret.
    let (ok, out) = accounts(&stack, &["test", "mydemo"], "");
    assert!(ok, "{out}");
    assert!(out.contains("accepted"), "{out}");
    outputs.push(out);

    // A wrong secret: refused by the exchange, in one line naming the account.
    let (ok, out) = accounts(
        &stack,
        &["edit", "mydemo", "--new-secret"],
        &format!("{WRONG}\n"),
    );
    assert!(ok, "{out}");
    outputs.push(out);
    let (ok, out) = accounts(&stack, &["test", "mydemo"], "");
    assert!(!ok, "a wrong secret was accepted: {out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(out.contains("mydemo") && out.contains("refused"), "{out}");
    outputs.push(out);

    // A file others can read is refused, naming the fix.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = accounts(&stack, &["test", "mydemo"], "");
    assert!(!ok && out.contains("chmod 600"), "{out}");
    outputs.push(out);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (ok, out) = accounts(&stack, &["remove", "mydemo"], "");
    assert!(ok, "{out}");
    outputs.push(out);
    let (ok, out) = accounts(&stack, &["list"], "");
    assert!(ok && !out.contains("mydemo"), "{out}");
    outputs.push(out);

    // No secret in anything printed, nor in the exchange's log.
    for o in &outputs {
        assert!(
            !o.contains(SECRET) && !o.contains(WRONG),
            "a secret was printed: {o}"
        );
    }
    let mut logs = 0;
    for e in std::fs::read_dir(stack.path("log")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        assert!(
            !text.contains(SECRET) && !text.contains(WRONG),
            "a secret in a log"
        );
        logs += 1;
    }
    assert!(logs >= 1, "the sim's log was scanned");
}

/// Typed at a terminal, the secret is not echoed: `accounts add` runs on a pseudo-terminal
/// (util-linux `script`), the secret is typed after the prompt, and the terminal's output
/// never shows it (the prompt said "input is shown" before).
#[test]
fn a_secret_typed_at_a_terminal_is_not_shown() {
    use std::io::Read;
    let mut stack = Stack::new(
        "[sim]\nlisten = \"{sim_listen}\"\nsymbols = 10\nuniverse_file = \"\"\nuniverse_price_dir = \"\"\n",
    );
    let _ = stack.start_sim();
    let file = stack.path("api_accounts.json");
    let cmd = format!(
        "{} accounts add ttydemo --environment demo --api-key sim-demo-key --config {}",
        bin("shardbot").display(),
        stack.config.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("SHARDBOT__EXCHANGE__ENVIRONMENT", "demo")
        .env("SHARDBOT__EXCHANGE__ACCOUNTS_FILE", &file)
        .env_remove("SHARDBOT_API_SECRET")
        .current_dir(stack.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script (a pseudo-terminal)");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // As a user does: type once the prompt is there.
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("API secret of ttydemo") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no prompt: {}",
            String::from_utf8_lossy(&seen)
        );
        if let Ok(chunk) = rx.recv_timeout(left) {
            seen.extend(chunk);
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{SECRET}\r").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    while let Ok(chunk) = rx.try_recv() {
        seen.extend(chunk);
    }
    let shown = String::from_utf8_lossy(&seen).into_owned();
    assert!(status.success(), "{shown}");
    assert!(!shown.contains(SECRET), "the secret was shown: {shown}");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("ttydemo") && saved.contains(SECRET), "saved");
}
