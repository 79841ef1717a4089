//! Conversions between the WIT tensor types and `aifn_tensor`.

use crate::wit;
use crate::GuestError;
use aifn_tensor::{Tensor, TensorData};

pub(crate) fn tensors_from_guest(
    tensors: Vec<wit::Tensor>,
    max_bytes: usize,
) -> Result<Vec<Tensor>, GuestError> {
    let mut total = 0usize;
    tensors
        .into_iter()
        .map(|t| {
            let data = match t.data {
                wit::TensorData::F32(v) => TensorData::F32(v),
                wit::TensorData::F64(v) => TensorData::F64(v),
                wit::TensorData::I32(v) => TensorData::I32(v),
                wit::TensorData::I64(v) => TensorData::I64(v),
                wit::TensorData::U8(v) => TensorData::U8(v),
                wit::TensorData::Bool(v) => TensorData::Bool(v),
                wit::TensorData::String(v) => TensorData::String(v),
            };
            total += data.byte_size();
            if total > max_bytes {
                return Err(GuestError::OutputTooLarge(max_bytes));
            }
            let shape = t.shape.into_iter().map(|d| d as usize).collect();
            Tensor::new(t.name, shape, data).map_err(|e| GuestError::InvalidOutput(e.to_string()))
        })
        .collect()
}

pub(crate) fn tensors_to_guest(tensors: &[Tensor]) -> Vec<wit::Tensor> {
    tensors
        .iter()
        .map(|t| wit::Tensor {
            name: t.name.clone(),
            shape: t.shape.iter().map(|&d| d as u32).collect(),
            data: match &t.data {
                TensorData::F32(v) => wit::TensorData::F32(v.clone()),
                TensorData::F64(v) => wit::TensorData::F64(v.clone()),
                TensorData::I32(v) => wit::TensorData::I32(v.clone()),
                TensorData::I64(v) => wit::TensorData::I64(v.clone()),
                TensorData::U8(v) => wit::TensorData::U8(v.clone()),
                TensorData::Bool(v) => wit::TensorData::Bool(v.clone()),
                TensorData::String(v) => wit::TensorData::String(v.clone()),
            },
        })
        .collect()
}
