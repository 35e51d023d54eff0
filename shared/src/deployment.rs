//! [`Deployment`]: where the handlers run, for the few things only the local stack may do.
//!
//! Inside Lambda the file system is the function's own code (`/var/task`) and the
//! kernel's (`/proc`), and `http://127.0.0.1:9001` is the Runtime API, which answers
//! whoever asks with the next invocation's event. So what an operator may point the
//! service at is narrower there: no folder sources, and a credentials file's `token_uri`
//! must be https (a loopback http one would post a refresh token or a signed assertion
//! to the Runtime API). On the local stack both are what a developer wants (a folder
//! beside the stack, a local token fake).

/// Where the handlers run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deployment {
    /// Lambda: the strict choice, and what a handler built without saying gets.
    #[default]
    Aws,
    /// The local stack and the tests.
    Local,
}

impl Deployment {
    /// May a source be a folder of this machine?
    pub fn allows_folder_sources(self) -> bool {
        self == Deployment::Local
    }

    /// May a credentials file's `token_uri` be plain http to a loopback address?
    pub fn allows_plain_http_to_loopback(self) -> bool {
        self == Deployment::Local
    }

    /// Why a folder source is refused here (for the operator's answer and the job's
    /// failure alike).
    pub const FOLDER_REFUSED: &str = "folder sources are for the local stack only: on AWS a \
        folder is the function's own file system (use a drive, sheet or calendar source)";
}
