//! `scheduler`: the EventBridge schedule (rate(5 minutes)). Reconciles every source of
//! every registered band and of those in `BANDS` (push is lossy), prunes their channel
//! logs, and with `BANDSYNC_CREDENTIALS_KEY` set keeps a watch channel on every Google
//! source, addressed to `WEBHOOK_URL`. The event is not read: a manual invoke ticks too.

use bandsync::adapters::aws::AwsContext;
use bandsync::wiring;
use lambda_runtime::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    bandsync::transport::telemetry::init();
    let bands = &bandsync::transport::lambda::bands_from_env()?;
    let handler = &wiring::scheduler(&AwsContext::from_env().await)?;
    lambda_runtime::run(service_fn(move |event| {
        bandsync::transport::lambda::scheduler(handler, bands, event)
    }))
    .await
}
