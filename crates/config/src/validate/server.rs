//! `[server]`, `[admin]` and `[log]`: the process-wide sections, checked and mapped into
//! [`Server`], [`Admin`] and [`Log`].

use std::path::PathBuf;

use super::Validator;
use crate::defaults;
use crate::file::{FileConfig, Spanned};
use crate::locate::KeyPath;
use crate::runtime::{AccessLogTarget, Admin, ClientErrorDetail, Log, LogFormat, Server};

impl Validator<'_> {
    /// `[server]`; `workers = 0` is resolved to the number of CPUs here.
    pub(super) fn server(&mut self, file: &FileConfig) -> Server {
        let key = KeyPath::root("server");
        let server = file.server.as_ref().map(Spanned::get_ref);
        let workers = match server
            .and_then(|s| s.workers.as_ref())
            .map_or(defaults::WORKERS, |w| *w.get_ref())
        {
            // 0: one worker per CPU (see `defaults::WORKERS`).
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        let drain_timeout = server
            .and_then(|s| s.drain_timeout.as_ref())
            .and_then(|d| self.duration(d, &key.key("drain_timeout")))
            .unwrap_or(defaults::DRAIN_TIMEOUT);
        Server {
            workers,
            drain_timeout,
        }
    }

    /// `[admin]`: its address, and whether it serves xDS (on unless `xds = false`).
    pub(super) fn admin(&mut self, file: &FileConfig) -> Option<Admin> {
        file.admin.as_ref().and_then(|admin| {
            let key = KeyPath::root("admin");
            let xds = admin.get_ref().xds.as_ref().is_none_or(|x| *x.get_ref());
            let address = &admin.get_ref().address;
            self.socket_addr(address, &key.key("address"))
                .map(|address| Admin { address, xds })
        })
    }

    /// `[log]`: level, access-log target and format.
    pub(super) fn log(&mut self, file: &FileConfig) -> Log {
        let key = KeyPath::root("log");
        let log = file.log.as_ref().map(Spanned::get_ref);
        let mut level = defaults::LOG_LEVEL.to_owned();
        if let Some(l) = log.and_then(|l| l.level.as_ref()) {
            let lower = l.get_ref().to_ascii_lowercase();
            if ["error", "warn", "info", "debug", "trace"].contains(&lower.as_str()) {
                level = lower;
            } else {
                self.err(
                    &l.span(),
                    &key.key("level"),
                    format!(
                        "unknown level {:?}, expected one of error, warn, info, debug, trace",
                        l.get_ref()
                    ),
                );
            }
        }
        let access_log = match log.and_then(|l| l.access_log.as_ref()) {
            None => defaults::ACCESS_LOG,
            Some(a) => match a.get_ref().as_str() {
                "stdout" => AccessLogTarget::Stdout,
                "stderr" => AccessLogTarget::Stderr,
                "off" => AccessLogTarget::Off,
                "" => {
                    self.err(
                        &a.span(),
                        &key.key("access_log"),
                        "must be stdout, stderr, off or a file path",
                    );
                    defaults::ACCESS_LOG
                }
                path => {
                    if self.depth == super::Depth::Check
                        && let Err(e) = std::fs::OpenOptions::new()
                            .append(true)
                            .create(true)
                            .open(path)
                    {
                        self.err(
                            &a.span(),
                            &key.key("access_log"),
                            format!("cannot open {path} for appending: {e}"),
                        );
                    }
                    AccessLogTarget::File(PathBuf::from(path))
                }
            },
        };
        let format = match log.and_then(|l| l.format.as_ref()) {
            None => defaults::LOG_FORMAT,
            Some(f) => match f.get_ref().as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                other => {
                    self.err(
                        &f.span(),
                        &key.key("format"),
                        format!("unknown format {other:?}, expected json or text"),
                    );
                    defaults::LOG_FORMAT
                }
            },
        };
        let client_error_detail = match log.and_then(|l| l.client_error_detail.as_ref()) {
            None => defaults::CLIENT_ERROR_DETAIL,
            Some(d) => match d.get_ref().as_str() {
                "reason" => ClientErrorDetail::Reason,
                "full" => ClientErrorDetail::Full,
                other => {
                    self.err(
                        &d.span(),
                        &key.key("client_error_detail"),
                        format!("unknown value {other:?}, expected \"reason\" or \"full\""),
                    );
                    defaults::CLIENT_ERROR_DETAIL
                }
            },
        };
        Log {
            level,
            access_log,
            format,
            client_error_detail,
        }
    }
}
