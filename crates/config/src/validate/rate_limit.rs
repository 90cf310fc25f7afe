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
            Some(b) => match u32::try_from(*b.get_ref()) {
                Ok(burst) if burst >= 1 => burst,
                _ => {
                    self.err(
                        &b.span(),
                        &key.key("burst"),
                        format!("must be 1 to {} (the calls allowed at once)", u32::MAX),
                    );
                    ok = false;
                    1
                }
            },
            None if ok => defaults::rate_limit_burst(rate),
            None => 1,
        };
        let per_lower = file.per.as_ref().map(|p| p.get_ref().to_ascii_lowercase());
        let per = match file.per.as_ref().zip(per_lower.as_deref()) {
            None | Some((_, "client_ip")) => RateLimitScope::ClientIp,
            Some((_, "listener")) => RateLimitScope::Listener,
            Some((p, _)) => {
                self.err(
                    &p.span(),
                    &key.key("per"),
                    format!(
                        "unknown scope {:?}, expected client_ip or listener",
                        p.get_ref()
                    ),
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
