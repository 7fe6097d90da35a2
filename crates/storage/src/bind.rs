//! Bind values whose `sqlx::Any` encoding needs help.
//!
//! sqlx 0.8's `Any` driver maps a NULL `f64` to a PostgreSQL `float4` parameter (and a
//! NULL `f32` to `float8`). PostgreSQL prepares a statement once per connection with the
//! types of its first call, so a statement first run with a NULL coordinate declares
//! that parameter `float4`, and every later call on that connection with a real
//! coordinate (8 bytes) fails with "incorrect binary data format in bind parameter":
//! a poisoned connection until restart. [`OptF64`] encodes NULL as the kind that sqlx
//! turns into a `float8` NULL on every backend. `a_refused_statement_poisons_nothing`
//! in the storage story catches a regression (or an upstream fix that swaps it back).

use sqlx::any::{Any, AnyTypeInfo};
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::{Database, Type};

/// An optional double for `.bind()`: always a `float8`/`REAL` parameter, NULL or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptF64(pub Option<f64>);

impl Type<Any> for OptF64 {
    fn type_info() -> AnyTypeInfo {
        <f64 as Type<Any>>::type_info()
    }
}

impl<'q> Encode<'q, Any> for OptF64 {
    fn encode_by_ref(&self, buf: &mut <Any as Database>::ArgumentBuffer<'q>) -> Result<IsNull, BoxDynError> {
        match self.0 {
            Some(v) => <f64 as Encode<'q, Any>>::encode_by_ref(&v, buf),
            // A NULL of kind `Real` (f32) is what sqlx 0.8 converts into a `float8` NULL.
            None => <Option<f32> as Encode<'q, Any>>::encode_by_ref(&None, buf),
        }
    }
}
