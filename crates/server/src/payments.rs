//! Payments for catalog orders. A provider authorizes an amount on a card token, captures
//! it, voids it, or refunds a capture. The order path authorizes the menu price *before*
//! anything is reserved: a declined card leaves no order and holds no stock. Once the order
//! is placed the authorization is captured; if it could not be placed (out of stock, a
//! repeated order) the authorization is voided; cancelling a paid order refunds it.
//!
//! The built-in `test` provider (`payments.provider = "test"`) behaves like a card
//! processor's test mode, decided by the card token: `tok_test_decline` is declined
//! (`card_declined`), `tok_test_insufficient_funds` too (`insufficient_funds`),
//! `tok_test_unavailable` finds the processor down, and any other `tok_test_...` token is
//! approved. It enforces what a processor enforces: capture at most what was authorized,
//! once; no capture after a void; refund only a capture.

use crate::error::ApiError;
use crate::state::AppState;
use async_trait::async_trait;
use axum::http::StatusCode;
use lastmile_core::{OrderId, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// `payments` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// `test` (the built-in test provider) or `none` (catalog orders carry no payment).
    pub provider: String,
    /// Refuse catalog orders that carry no `payment`.
    pub required: bool,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self { provider: "test".into(), required: false }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentError {
    /// The card was refused; `code` is the processor's reason.
    Declined { code: String, message: String },
    /// The processor could not be reached or failed; nothing was charged.
    Unavailable(String),
    /// The call does not fit the payment's state (capture twice, refund a void, ...).
    Invalid(String),
}

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Hold `amount_minor` on the card; returns the processor's reference.
    async fn authorize(&self, amount_minor: i64, currency: &str, token: &str) -> Result<String, PaymentError>;
    async fn capture(&self, reference: &str, amount_minor: i64) -> Result<(), PaymentError>;
    async fn void(&self, reference: &str) -> Result<(), PaymentError>;
    async fn refund(&self, reference: &str) -> Result<(), PaymentError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldState {
    Authorized(i64),
    Captured,
    Voided,
    Refunded,
}

/// The built-in test processor (see the module notes).
#[derive(Default)]
pub struct TestProvider {
    held: Mutex<HashMap<String, HeldState>>,
}

impl TestProvider {
    fn step(
        &self,
        reference: &str,
        f: impl FnOnce(HeldState) -> Result<HeldState, String>,
    ) -> Result<(), PaymentError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let Some(now) = held.get(reference).copied() else {
            return Err(PaymentError::Invalid(format!("no payment {reference}")));
        };
        let next = f(now).map_err(PaymentError::Invalid)?;
        held.insert(reference.to_owned(), next);
        Ok(())
    }
}

#[async_trait]
impl PaymentProvider for TestProvider {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn authorize(&self, amount_minor: i64, currency: &str, token: &str) -> Result<String, PaymentError> {
        let declined =
            |code: &str, message: &str| Err(PaymentError::Declined { code: code.into(), message: message.into() });
        match token {
            "tok_test_decline" => return declined("card_declined", "the card was declined"),
            "tok_test_insufficient_funds" => return declined("insufficient_funds", "the card has insufficient funds"),
            "tok_test_unavailable" => return Err(PaymentError::Unavailable("the test processor is down".into())),
            t if !t.starts_with("tok_test_") => {
                return declined("invalid_token", "the test provider takes tok_test_... card tokens")
            }
            _ => {}
        }
        if amount_minor <= 0 || currency.len() != 3 {
            return Err(PaymentError::Invalid(format!("cannot authorize {amount_minor} {currency}")));
        }
        let reference = format!("test_auth_{}", uuid::Uuid::new_v4().simple());
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.clone(), HeldState::Authorized(amount_minor));
        Ok(reference)
    }

    async fn capture(&self, reference: &str, amount_minor: i64) -> Result<(), PaymentError> {
        self.step(reference, |s| match s {
            HeldState::Authorized(held) if amount_minor <= held => Ok(HeldState::Captured),
            HeldState::Authorized(held) => Err(format!("cannot capture {amount_minor}: {held} was authorized")),
            other => Err(format!("cannot capture a payment that is {other:?}")),
        })
    }

    async fn void(&self, reference: &str) -> Result<(), PaymentError> {
        self.step(reference, |s| match s {
            HeldState::Authorized(_) => Ok(HeldState::Voided),
            other => Err(format!("cannot void a payment that is {other:?}")),
        })
    }

    async fn refund(&self, reference: &str) -> Result<(), PaymentError> {
        self.step(reference, |s| match s {
            HeldState::Captured => Ok(HeldState::Refunded),
            other => Err(format!("cannot refund a payment that is {other:?}")),
        })
    }
}

/// The configured provider, if any.
pub fn provider(cfg: &PaymentsConfig) -> Option<&'static dyn PaymentProvider> {
    static TEST: OnceLock<TestProvider> = OnceLock::new();
    match cfg.provider.as_str() {
        "test" => Some(TEST.get_or_init(TestProvider::default)),
        _ => None,
    }
}

/// A catalog order's `payment`: `{"provider", "token"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentInput {
    pub provider: String,
    pub token: String,
}

/// A payment held for an order being placed.
pub struct Held {
    pub id: String,
    pub provider: &'static dyn PaymentProvider,
    pub reference: String,
    pub amount_minor: i64,
}

fn declined(code: &str, message: &str) -> ApiError {
    ApiError::new(StatusCode::PAYMENT_REQUIRED, "payment_declined", format!("payment declined: {message}"))
        .with_details(serde_json::json!({"decline_code": code}))
}

/// Authorize `amount_minor` for an order of `store`; a decline is recorded and answered
/// `402 payment_declined`, a processor that is down `503 payment_unavailable`.
pub async fn authorize(
    state: &AppState,
    tenant: &TenantId,
    store: &lastmile_core::StoreId,
    input: &PaymentInput,
    amount_minor: i64,
    currency: &str,
) -> Result<Held, ApiError> {
    let field = |m: String| ApiError::validation(vec![("payment.provider".into(), m)]);
    let Some(provider) = provider(&state.cfg.payments) else {
        return Err(field("payments are not configured on this server (payments.provider)".into()));
    };
    if input.provider != provider.name() {
        return Err(field(format!("must be `{}`", provider.name())));
    }
    let record = |state: &'static str, reference: Option<String>, code: Option<String>| lastmile_storage::NewPayment {
        store_id: store.clone(),
        provider: provider.name().into(),
        provider_ref: reference,
        amount_minor,
        currency: currency.to_owned(),
        state,
        decline_code: code,
    };
    match provider.authorize(amount_minor, currency, &input.token).await {
        Ok(reference) => {
            let id = state.db.record_payment(tenant, record("authorized", Some(reference.clone()), None)).await?;
            Ok(Held { id, provider, reference, amount_minor })
        }
        Err(PaymentError::Declined { code, message }) => {
            state.db.record_payment(tenant, record("declined", None, Some(code.clone()))).await?;
            metrics::counter!("lastmile_payments_total", "outcome" => "declined").increment(1);
            Err(declined(&code, &message))
        }
        Err(PaymentError::Unavailable(m)) | Err(PaymentError::Invalid(m)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "payment_unavailable", m))
        }
    }
}

impl Held {
    /// The order was placed: take the money.
    pub async fn capture(&self, state: &AppState, tenant: &TenantId, order: &OrderId, amount_minor: i64) {
        match self.provider.capture(&self.reference, amount_minor).await {
            Ok(()) => {
                metrics::counter!("lastmile_payments_total", "outcome" => "captured").increment(1);
                if let Err(e) =
                    state.db.set_payment_state(tenant, &self.id, "authorized", "captured", Some(order)).await
                {
                    tracing::error!(error = %e, payment = %self.id, "recording a capture failed");
                }
            }
            Err(e) => {
                // The authorization stands and names the order; ops can capture it by hand.
                tracing::error!(error = ?e, payment = %self.id, "capturing a payment failed");
                let _ = state.db.set_payment_state(tenant, &self.id, "authorized", "authorized", Some(order)).await;
            }
        }
    }

    /// The order could not be placed: release the hold.
    pub async fn void(&self, state: &AppState, tenant: &TenantId) {
        if let Err(e) = self.provider.void(&self.reference).await {
            tracing::error!(error = ?e, payment = %self.id, "voiding a payment failed");
            return;
        }
        metrics::counter!("lastmile_payments_total", "outcome" => "voided").increment(1);
        let _ = state.db.set_payment_state(tenant, &self.id, "authorized", "voided", None).await;
    }
}

/// After an order was cancelled: refund what was captured for it.
pub async fn refund_captured(state: &AppState, tenant: &TenantId, order: &OrderId) {
    let Ok(list) = state.db.payments_for_order(tenant, order).await else { return };
    for p in list.into_iter().filter(|p| p.state == "captured") {
        let Some(provider) = provider(&state.cfg.payments).filter(|pr| pr.name() == p.provider) else { continue };
        let Some(reference) = &p.provider_ref else { continue };
        match provider.refund(reference).await {
            Ok(()) => {
                metrics::counter!("lastmile_payments_total", "outcome" => "refunded").increment(1);
                let _ = state.db.set_payment_state(tenant, &p.id, "captured", "refunded", None).await;
            }
            Err(e) => tracing::error!(error = ?e, payment = %p.id, "refunding a payment failed"),
        }
    }
}
