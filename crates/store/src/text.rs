//! Reading identifiers back from MySQL.
//!
//! Identifier columns use the `utf8mb4_bin` collation so ids compare byte for byte ("Bob" and
//! "bob" are different users). MySQL flags such columns BINARY, and sqlx 0.8 then refuses to
//! decode them as `String`. `DbText` decodes UTF-8 text from binary-flagged and ordinary
//! string columns alike; use it for every text column a query reads.

use std::fmt;

use serde::Serialize;
use sqlx::decode::Decode;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlTypeInfo, MySqlValueRef};
use sqlx::Type;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DbText(pub String);

impl DbText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for DbText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<DbText> for String {
    fn from(t: DbText) -> Self {
        t.0
    }
}

impl Type<MySql> for DbText {
    fn type_info() -> MySqlTypeInfo {
        <str as Type<MySql>>::type_info()
    }

    fn compatible(ty: &MySqlTypeInfo) -> bool {
        <str as Type<MySql>>::compatible(ty) || <[u8] as Type<MySql>>::compatible(ty)
    }
}

impl<'r> Decode<'r, MySql> for DbText {
    fn decode(value: MySqlValueRef<'r>) -> Result<Self, BoxDynError> {
        let bytes = <&[u8] as Decode<MySql>>::decode(value)?;
        Ok(Self(std::str::from_utf8(bytes)?.to_owned()))
    }
}

impl Encode<'_, MySql> for DbText {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        <&str as Encode<MySql>>::encode_by_ref(&self.0.as_str(), buf)
    }
}
