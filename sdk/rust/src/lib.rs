//! Write an aifn function's preprocessing (and optional postprocessing) in Rust.
//!
//! ```ignore
//! use aifn_sdk::{Error, Function, Request, Response, Tensor};
//!
//! struct Doubler;
//!
//! impl Function for Doubler {
//!     fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
//!         let x: Vec<f32> = req.json()?;
//!         Ok(vec![Tensor::f32("x", vec![1, x.len() as u32], x)])
//!     }
//!     fn postprocess(_req: Request, outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
//!         Ok(None) // let the host answer with the outputs as v2 JSON
//!     }
//! }
//!
//! aifn_sdk::export!(Doubler);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` is a component that
//! implements the `aifn:function` world (`spec/wit/function.wit`).

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../spec/wit",
        world: "function",
        pub_export_macro: true,
        export_macro_name: "__export_function",
        default_bindings_module: "aifn_sdk::bindings",
    });
}

#[doc(hidden)]
pub use bindings::__export_function;
pub use bindings::aifn::function::types::{
    Error, ErrorKind, Request, Response, Tensor, TensorData,
};
/// Implement this for your function type, then call [`export!`].
pub use bindings::Guest as Function;

/// Exports a type that implements [`Function`] as the component's `preprocess` and `postprocess`.
#[macro_export]
macro_rules! export {
    ($function:ident) => {
        $crate::__export_function!($function with_types_in $crate::bindings);
    };
}

/// Logging into the host's log, tagged with the function's name and version.
pub mod log {
    use crate::bindings::aifn::function::log::{log, Level};

    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

impl Error {
    /// The caller sent something the function cannot use: HTTP 400.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::BadRequest,
            message: message.into(),
        }
    }

    /// The function itself failed: HTTP 500.
    pub fn internal(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
}

impl Tensor {
    pub fn f32(name: impl Into<String>, shape: Vec<u32>, data: Vec<f32>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::F32(data),
        }
    }
    pub fn f64(name: impl Into<String>, shape: Vec<u32>, data: Vec<f64>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::F64(data),
        }
    }
    pub fn i32(name: impl Into<String>, shape: Vec<u32>, data: Vec<i32>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::I32(data),
        }
    }
    pub fn i64(name: impl Into<String>, shape: Vec<u32>, data: Vec<i64>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::I64(data),
        }
    }
    pub fn u8(name: impl Into<String>, shape: Vec<u32>, data: Vec<u8>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::U8(data),
        }
    }
    pub fn bool(name: impl Into<String>, shape: Vec<u32>, data: Vec<bool>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::Bool(data),
        }
    }
    pub fn string(name: impl Into<String>, shape: Vec<u32>, data: Vec<String>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::String(data),
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            TensorData::F64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_i32(&self) -> Option<&[i32]> {
        match &self.data {
            TensorData::I32(v) => Some(v),
            _ => None,
        }
    }
}

/// Finds a model output by name, or reports the function's own mistake.
pub fn output<'a>(outputs: &'a [Tensor], name: &str) -> Result<&'a Tensor, Error> {
    outputs
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::internal(format!("the model returned no output named `{name}`")))
}

impl Request {
    /// A header's value (names are matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses the body as JSON; a malformed body is the caller's fault (400).
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }
}

impl Response {
    /// A 200 response with a JSON body.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize>(value: &T) -> Result<Response, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("encoding the response: {e}")))?;
        Ok(Response {
            status: 200,
            content_type: "application/json".into(),
            body,
        })
    }
}
