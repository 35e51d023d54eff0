//! The per-band clients, with each band's stored credentials and the fake token endpoint.

use bandsync::google::GoogleError;
use bandsync::google::apis::*;
use bandsync::google::oauth::{OAuthOptions, TokenCache};
use bandsync::google::sealed::CredentialKey;
use bandsync::google::sealed::{credentials_context, seal};
use bandsync::model::SyncConfiguration;
use bandsync::ports::ConfigStore;
use bandsync_google_fake::oauth::{FakeOAuthState, FakeTokenServer, test_service_account_json};
use bandsync_testkit::*;
use std::sync::Arc;

#[tokio::test]
async fn stored_credentials_give_each_band_its_own_tokens_and_refuse_the_rest() {
    // GIVEN a token endpoint that knows the test service account, and band `demo`
    // whose configuration holds the account's key file sealed for it
    let server = FakeTokenServer::start(FakeOAuthState::with_test_accounts())
        .await
        .unwrap();
    let h = Harness::new();
    let key = CredentialKey::generate().unwrap();
    let file = test_service_account_json(&server.token_uri());
    let demo = h.add_band("demo").await;
    let sealed = seal(&key, file.as_bytes(), &credentials_context(&demo)).unwrap();
    let mut config = SyncConfiguration {
        band: demo.clone(),
        name: "demo".into(),
        file_types: vec![],
        google_credentials: Some(sealed.clone()),
        entity_types: vec![],
        strict_entities: false,
        history_days: None,
    };
    h.store.put_config(&config).await.unwrap();
    // AND band `jazz` that copied demo's sealed credentials, and band `rock` with none
    config.band = band("jazz");
    h.store.put_config(&config).await.unwrap();
    h.add_band("rock").await;
    // (the fake's token_uri is plain http to loopback: the local stack's choice)
    let cache = Arc::new(TokenCache::new(
        bandsync::google::https_client().unwrap(),
        OAuthOptions {
            deployment: bandsync::deployment::Deployment::Local,
            ..OAuthOptions::default()
        },
    ));
    let tokens = StoredCredentials::new(h.store.clone(), key, cache.clone());

    // WHEN demo's tokens are asked for, twice
    let first = tokens.for_band(&demo).await.unwrap().token().await.unwrap();
    let again = tokens.for_band(&demo).await.unwrap().token().await.unwrap();

    // THEN the endpoint issued it (one JWT-bearer exchange), and it is reused
    assert!(server.state().is_issued(&first));
    assert_eq!(first, again);
    assert_eq!(server.state().request_count(), 1);
    assert_eq!(cache.len(), 1);
    // AND the copied ciphertext does not open for another band, and no credentials is
    // a clear configuration error
    for other in ["jazz", "rock"] {
        let err = tokens.for_band(&band(other)).await.err().expect("refused");
        assert!(matches!(err, GoogleError::Config(_)), "{other}: {err:?}");
        assert!(err.to_string().contains(other), "{err}");
    }
}
