//! `rate_limit` tables (listeners and routes): a token bucket's rate, burst and scope.

use super::Validator;
use crate::defaults;
use crate::file::{RateLimitFile, Spanned};
use crate::locate::KeyPath;
use crate::runtime::{RateLimit, RateLimitScope};

impl Validator<'_> {
    /// The `rate_limit` table at `key`, when given; `None` when absent or wrong.
    pub(super) fn rate_limit(
        &mut self,
        table: Option<&Spanned<RateLimitFile>>,
        key: &KeyPath,
    ) -> Option<RateLimit> {
        let file = table?.get_ref();
        let key = key.key("rate_limit");
        let rate = *file.requests_per_second.get_ref();
        let mut ok = true;
        if !(rate > 0.0 && rate <= defaults::RATE_LIMIT_MAX_RATE) {
            self.err(
                &file.requests_per_second.span(),
                &key.key("requests_per_second"),
                format!(
                    "must be greater than 0 and at most {} (calls per second; 0.5 is one call every 2 s)",
                    defaults::RATE_LIMIT_MAX_RATE
                ),
            );
            ok = false;
        }
        let burst = match &file.burst {
            Some(b) if *b.get_ref() == 0 => {
                self.err(
                    &b.span(),
                    &key.key("burst"),
                    "must be at least 1 (the calls allowed at once)",
                );
                ok = false;
                1
            }
            Some(b) => *b.get_ref(),
            None if ok => defaults::rate_limit_burst(rate),
            None => 1,
        };
        let per = match file.per.as_ref().map(|p| (p, p.get_ref().as_str())) {
            None | Some((_, "client_ip")) => RateLimitScope::ClientIp,
            Some((_, "listener")) => RateLimitScope::Listener,
            Some((p, other)) => {
                self.err(
                    &p.span(),
                    &key.key("per"),
                    format!("unknown scope {other:?}, expected client_ip or listener"),
                );
                ok = false;
                RateLimitScope::ClientIp
            }
        };
        let max_clients = match &file.max_clients {
            Some(m) if *m.get_ref() == 0 => {
                self.err(&m.span(), &key.key("max_clients"), "must be at least 1");
                ok = false;
                0
            }
            Some(m) if per == RateLimitScope::Listener => {
                self.warn(
                    &m.span(),
                    &key.key("max_clients"),
                    "has no effect with per = \"listener\" (one bucket for all clients)",
                );
                *m.get_ref()
            }
            Some(m) => *m.get_ref(),
            None => defaults::RATE_LIMIT_MAX_CLIENTS,
        };
        ok.then(|| RateLimit {
            requests_per_second: rate,
            burst,
            per,
            max_clients: usize::try_from(max_clients).unwrap_or(usize::MAX),
        })
    }
}
