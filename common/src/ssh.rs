//! `paas ssh`: a shell or one command in a running instance (issue 21), and its wire protocol.
//!
//! Path: the CLI opens a WebSocket to the controller, `GET /v1/apps/{name}/ssh?index=I&process=T
//! &tty=BOOL&cols=C&rows=R&command=CMD` (the usual bearer token; refused with the usual JSON
//! error before the upgrade). The agent never listens on a port, so the controller records a
//! pending session for the instance's node ([`SessionOffer`]); the node's agent long-polls
//! `GET /v1/agent/sessions` ([`SessionOffers`]), and dials back
//! `GET /v1/agent/ssh/{session_id}` (WebSocket, node credential) at the URL the offer names.
//! The controller then splices the two sockets. A session no node takes up within
//! [`PICKUP_TIMEOUT_SECS`] fails with `ssh_unavailable`.
//!
//! Frames, the same on both legs:
//! - **binary**: data. The first byte is the channel ([`STDIN`], [`STDOUT`], [`STDERR`]), the rest
//!   the bytes. With a TTY everything the process writes comes on [`STDOUT`].
//! - **text**: one JSON [`Control`] message: `{"type":"resize","cols":80,"rows":24}` and
//!   `{"type":"eof"}` from the client; `{"type":"exit","code":7}` (last message; the socket
//!   closes after it) and `{"type":"error","code":"...","message":"..."}` towards the client.

use serde::{Deserialize, Serialize};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// How long a node has to dial back before the client is told the session failed.
pub const PICKUP_TIMEOUT_SECS: u64 = 10;

/// A control message (a text frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// The client's terminal changed size (TTY sessions only).
    Resize { cols: u16, rows: u16 },
    /// The client's stdin ended.
    Eof,
    /// The remote process ended with this status; the last message of a session.
    Exit { code: i64 },
    /// The session could not start or broke; `code` is an `ErrorCode` string.
    Error { code: String, message: String },
}

impl Control {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<Control> {
        serde_json::from_str(text).ok()
    }
}

/// A data frame: channel byte then payload.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// What the client asks for, in the query string of `GET /v1/apps/{name}/ssh`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct SshQuery {
    /// Instance index (default 0).
    #[serde(default)]
    pub index: u32,
    /// Process type (default `web`).
    pub process: Option<String>,
    /// The command to run through `/bin/sh -c`; none: an interactive shell.
    pub command: Option<String>,
    /// Allocate a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    pub cols: Option<u16>,
    pub rows: Option<u16>,
}

/// A session a node's agent must serve: exec in the container of `instance_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOffer {
    pub session_id: String,
    pub instance_id: String,
    /// The WebSocket URL to dial back (with the node token), on the controller holding the
    /// client's socket; `None`: the agent's own controller.
    #[serde(default)]
    pub dial: Option<String>,
    pub command: Option<String>,
    pub tty: bool,
    pub cols: Option<u16>,
    pub rows: Option<u16>,
}

/// `GET /v1/agent/sessions`: the sessions waiting for this node (long-poll, answered at once
/// when one is waiting).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionOffers {
    pub sessions: Vec<SessionOffer>,
}

/// `GET`/`PUT /v1/apps/{name}/ssh-enabled`, `PUT /v1/spaces/{org}/{space}/ssh-allowed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshSetting {
    pub enabled: bool,
}

/// Whether ssh to an app is possible, and why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SshStatus {
    /// Both the app's and its space's settings allow it.
    pub enabled: bool,
    pub app_enabled: bool,
    pub space_allowed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        for c in [
            Control::Resize { cols: 80, rows: 24 },
            Control::Eof,
            Control::Exit { code: 7 },
            Control::Error {
                code: "ssh_disabled".into(),
                message: "no".into(),
            },
        ] {
            assert_eq!(Control::parse(&c.to_text()), Some(c));
        }
        assert_eq!(
            Control::Exit { code: 3 }.to_text(),
            r#"{"type":"exit","code":3}"#
        );
    }
}
