//! `syncmail send`: a sendmail program over the outbox, and the outbox's controls.
//!
//! As a sendmail program (what mutt, neomutt, aerc and git send-email call): the message
//! comes on standard input, recipients as arguments, with the options those programs pass:
//! `-t` (recipients from To, Cc, Bcc too), `-f ADDR` / `-r ADDR` (envelope sender),
//! `-F NAME` (full name for a missing From), `-i` / `-oi` (a lone `.` line does not end the
//! message); other `-o…`, `-B…`, `-N…`, `-bm`, `-v` are accepted and ignored. The message is
//! queued durably before the exit status 0; `--now` also sends it at once.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, Read};
use syncmail::{AccountConfig, Config, OutState, QueueOptions, Store};

/// What `syncmail send ARGS…` asks for, after reading the arguments.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SendArgs {
    pub account: Option<String>,
    pub queue: QueueOptions,
    /// Send at once after queueing.
    pub now: bool,
    /// Send the queue, read nothing.
    pub flush: bool,
    pub list: bool,
    /// With `list`: filed messages too.
    pub all: bool,
    pub retry: Option<i64>,
    pub sent: Option<i64>,
    /// `-i`/`-oi`: a line with a lone `.` is part of the message.
    pub ignore_dots: bool,
}

/// Reads the arguments after `send`.
pub fn parse(args: &[String]) -> Result<SendArgs> {
    let mut a = SendArgs::default();
    let mut it = args.iter().peekable();
    let value = |it: &mut std::iter::Peekable<std::slice::Iter<'_, String>>, opt: &str, inline: &str| {
        if !inline.is_empty() {
            return Ok(inline.to_string());
        }
        it.next().cloned().with_context(|| format!("{opt} needs a value"))
    };
    let id = |s: String, opt: &str| s.parse::<i64>().with_context(|| format!("{opt} needs a message number"));
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => {
                a.queue.recipients.extend(it.by_ref().cloned());
                break;
            }
            "--account" => a.account = Some(value(&mut it, "--account", "")?),
            "--now" => a.now = true,
            "--flush" => a.flush = true,
            "--list" => a.list = true,
            "--all" => a.all = true,
            "--retry" => a.retry = Some(id(value(&mut it, "--retry", "")?, "--retry")?),
            "--sent" => a.sent = Some(id(value(&mut it, "--sent", "")?, "--sent")?),
            "-t" => a.queue.read_recipients = true,
            "-i" | "-oi" => a.ignore_dots = true,
            "-bm" | "-v" => {}
            s if s.starts_with("-f") || s.starts_with("-r") => {
                a.queue.from = Some(value(&mut it, &s[..2], &s[2..])?);
            }
            s if s.starts_with("-F") => a.queue.full_name = Some(value(&mut it, "-F", &s[2..])?),
            s if s.starts_with("-o") || s.starts_with("-B") || s.starts_with("-N") => {}
            s if s.starts_with('-') => bail!(
                "unknown option {s}; syncmail send takes -t, -f ADDR, -F NAME, -i, -oi, recipients, or \
                 --now, --flush, --list, --retry ID, --sent ID, --account NAME"
            ),
            _ => a.queue.recipients.push(arg.clone()),
        }
    }
    let controls = [a.flush, a.list, a.retry.is_some(), a.sent.is_some()].iter().filter(|x| **x).count();
    if controls > 1 || (controls == 1 && (a.now || !a.queue.recipients.is_empty() || a.queue.read_recipients)) {
        bail!("--flush, --list, --retry and --sent go alone, without a message to queue");
    }
    Ok(a)
}

/// The message on standard input; without `ignore_dots` a line with a lone `.` ends it,
/// as sendmail does.
pub fn read_message(input: impl Read, ignore_dots: bool) -> Result<Vec<u8>> {
    let mut reader = std::io::BufReader::new(input);
    let mut out = Vec::new();
    if ignore_dots {
        reader.read_to_end(&mut out).context("cannot read the message on standard input")?;
        return Ok(out);
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).context("cannot read the message on standard input")? == 0 {
            break;
        }
        if line == b".\n" || line == b".\r\n" {
            break;
        }
        out.extend_from_slice(&line);
    }
    Ok(out)
}

/// The account to queue in: `--account`, else the only one with `[smtp]`, else the one
/// whose `from` addresses hold the sender.
pub fn pick_account(config: &Config, name: Option<&str>, sender: &str) -> Result<AccountConfig> {
    if let Some(n) = name {
        let a = config.select(&[n.to_string()])?.remove(0);
        if a.smtp.is_none() {
            bail!("account {n} has no [smtp] section, so it cannot send mail");
        }
        return Ok(a);
    }
    let senders: Vec<&AccountConfig> = config.accounts.values().filter(|a| a.smtp.is_some()).collect();
    match senders.as_slice() {
        [] => bail!("no account has an [smtp] section; add one to send mail (see the README)"),
        [one] => Ok((*one).clone()),
        many => many
            .iter()
            .find(|a| a.smtp.as_ref().is_some_and(|s| s.from.iter().any(|f| f.eq_ignore_ascii_case(sender))))
            .map(|a| (*a).clone())
            .with_context(|| {
                format!(
                    "several accounts can send ({}) and none lists the sender {sender:?} in its [smtp] from; \
                     choose one with --account NAME",
                    many.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                )
            }),
    }
}

/// `--list`: one line per message (or one JSON object per line).
pub fn list(stores: &[Store], all: bool, json: bool) -> Result<()> {
    for store in stores {
        for r in store.outbox()? {
            if r.state == OutState::Filed && !all {
                continue;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "account": store.account().name,
                        "id": r.id,
                        "state": r.state.name(),
                        "from": r.from,
                        "to": r.to,
                        "subject": r.subject,
                        "message_id": r.message_id,
                        "attempts": r.attempts,
                        "next_attempt": r.next_attempt,
                        "last_error": r.last_error,
                        "server_text": r.server_text,
                    })
                );
            } else {
                println!(
                    "{}/{}\t{}\t{}\tto {}\t{:?}{}",
                    store.account().name,
                    r.id,
                    r.state.name(),
                    if r.attempts > 0 { format!("{} attempts", r.attempts) } else { String::new() },
                    r.to.join(", "),
                    r.subject,
                    if r.last_error.is_empty() { String::new() } else { format!("\t{}", r.last_error) },
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn sendmail_options() {
        // mutt: sendmail -oi -oem -f from -- rcpts; git send-email: -i rcpts.
        let a = parse(&args(&["-oi", "-oem", "-f", "me@x", "--", "a@y", "-b@z"])).unwrap();
        assert!(a.ignore_dots);
        assert_eq!(a.queue.from.as_deref(), Some("me@x"));
        assert_eq!(a.queue.recipients, vec!["a@y", "-b@z"]);
        let a = parse(&args(&["-t", "-i", "-Fme too", "-rme@x", "c@d", "--now"])).unwrap();
        assert!(a.queue.read_recipients && a.ignore_dots && a.now);
        assert_eq!(a.queue.full_name.as_deref(), Some("me too"));
        assert_eq!(a.queue.from.as_deref(), Some("me@x"));
        assert_eq!(parse(&args(&["--retry", "7"])).unwrap().retry, Some(7));
        assert!(parse(&args(&["--retry", "x"])).is_err());
        assert!(parse(&args(&["-Q"])).is_err());
        assert!(parse(&args(&["--list", "a@b"])).is_err());
        assert!(parse(&args(&["-f"])).is_err());
    }

    #[test]
    fn lone_dot_ends_the_message_unless_ignored() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(read_message(&input[..], false).unwrap(), b"Subject: x\n\nline\n");
        assert_eq!(read_message(&input[..], true).unwrap(), input);
    }
}
