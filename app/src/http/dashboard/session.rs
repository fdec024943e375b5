//! Dashboard sessions: a random id in an `HttpOnly; SameSite=Strict` cookie, held in memory
//! with an expiry, each with its own CSRF token and a one-shot flash message.
//!
//! The admin token itself never leaves the login form: the cookie carries only the session
//! id, and a restart (or logout) ends every session.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie that carries the session id.
pub const COOKIE: &str = "keel_admin_session";

/// How long a session lasts after login.
pub const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// At most this many sessions are kept; the one closest to expiry makes room for a new one.
const MAX_SESSIONS: usize = 1024;

/// A message shown once, on the next page the session sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// Whether it reports a success (`false`: a refusal or failure).
    pub ok: bool,
    /// What to say.
    pub text: String,
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
    flash: Option<Flash>,
}

/// The live sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie).
    pub fn create(&self) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                csrf: random_hex(),
                expires: now + LIFETIME,
                flash: None,
            },
        );
        id
    }

    /// The CSRF token of a live session, or `None` when the id is unknown or expired.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let mut map = self.lock();
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.csrf.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.lock().get_mut(id) {
            s.flash = Some(flash);
        }
    }

    /// Takes the session's pending message.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves a consistent map (every change is one call).
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// 256 random bits from the operating system's generator, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes[..]);
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The session id in a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The `Set-Cookie` value that starts a session (`secure` when served over HTTPS).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_carry_their_own_csrf_token_and_end_on_logout() {
        let sessions = Sessions::default();
        let a = sessions.create();
        let b = sessions.create();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let csrf = sessions.csrf(&a).expect("a live session");
        assert_ne!(csrf, a, "the CSRF token is not the session id");
        assert_ne!(Some(csrf), sessions.csrf(&b));
        sessions.set_flash(
            &a,
            Flash {
                ok: true,
                text: "done".into(),
            },
        );
        assert_eq!(
            sessions.take_flash(&a).map(|f| f.text).as_deref(),
            Some("done")
        );
        assert_eq!(sessions.take_flash(&a), None, "a flash is shown once");
        sessions.remove(&a);
        assert_eq!(sessions.csrf(&a), None);
        assert_eq!(sessions.csrf("unknown"), None);
    }

    #[test]
    fn the_cookie_is_found_among_others_and_never_empty() {
        assert_eq!(
            from_cookie_header("a=1; keel_admin_session=abc; b=2"),
            Some("abc")
        );
        assert_eq!(from_cookie_header("keel_admin_session="), None);
        assert_eq!(from_cookie_header("other=abc"), None);
        let cookie = set_cookie("abc", false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(cookie.contains("Path=/admin") && !cookie.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }
}
