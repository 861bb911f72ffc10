//! A funnel definition as the API accepts it (`FunnelBody`) and as it is validated
//! (`FunnelSpec`): 2..10 steps, each an event type with an optional property filter, a window
//! and an order mode.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::params;
use crate::property::{property_path, value_text};

pub const MAX_STEPS: usize = 10;
pub const MAX_WINDOW_SECONDS: u32 = 90 * 86_400;
/// One step: an event type, optionally only events whose property equals a value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Step {
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderMode {
    Ordered,
    Strict,
}

impl OrderMode {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ApiError> {
        match raw {
            "ordered" => Ok(Self::Ordered),
            "strict" => Ok(Self::Strict),
            other => Err(ApiError::bad(
                field,
                format!("{other:?} is not one of ordered, strict"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ordered => "ordered",
            Self::Strict => "strict",
        }
    }
}

/// A funnel as the API accepts it.
#[derive(Debug, Deserialize)]
pub struct FunnelBody {
    pub name: Option<String>,
    pub steps: Option<Vec<Step>>,
    pub window_seconds: Option<i64>,
    pub order_mode: Option<String>,
}

/// A validated funnel definition.
#[derive(Debug, Clone, Serialize)]
pub struct FunnelSpec {
    pub name: String,
    pub steps: Vec<Step>,
    pub window_seconds: u32,
    pub order_mode: OrderMode,
}

impl FunnelSpec {
    pub fn parse(body: FunnelBody) -> Result<Self, ApiError> {
        let name = body
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad("name", "is required"))?;
        if name.chars().count() > 128 {
            return Err(ApiError::bad("name", "has at most 128 characters"));
        }
        if name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::bad(
                "name",
                "must not be a number (numbers are funnel ids)",
            ));
        }
        let steps = body
            .steps
            .ok_or_else(|| ApiError::bad("steps", "is required"))?;
        if !(2..=MAX_STEPS).contains(&steps.len()) {
            return Err(ApiError::bad(
                "steps",
                format!("a funnel has 2 to {MAX_STEPS} steps"),
            ));
        }
        let mut parsed = Vec::with_capacity(steps.len());
        for step in steps {
            let event_type = params::event_type("steps", &step.event_type)?;
            match (&step.property, &step.value) {
                (None, None) => {}
                (Some(p), Some(v)) => {
                    property_path("steps", p)?;
                    if value_text(v).is_none() {
                        return Err(ApiError::bad(
                            "steps",
                            "a step's value must be a string, number or boolean",
                        ));
                    }
                }
                _ => {
                    return Err(ApiError::bad(
                        "steps",
                        "a step's property and value go together",
                    ))
                }
            }
            parsed.push(Step { event_type, ..step });
        }
        let window_seconds = match body.window_seconds {
            None => 86_400,
            Some(w) if (1..=i64::from(MAX_WINDOW_SECONDS)).contains(&w) => w as u32,
            Some(_) => {
                return Err(ApiError::bad(
                    "window_seconds",
                    format!("must be from 1 to {MAX_WINDOW_SECONDS}"),
                ))
            }
        };
        let order_mode = OrderMode::parse(
            "order_mode",
            body.order_mode.as_deref().unwrap_or("ordered"),
        )?;
        Ok(Self {
            name,
            steps: parsed,
            window_seconds,
            order_mode,
        })
    }
}
