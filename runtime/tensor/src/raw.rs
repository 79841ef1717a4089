//! Tensors as raw bytes: flat, row-major and little-endian, as the Open Inference Protocol carries
//! them in its binary tensor data extension (REST) and in `raw_input_contents` /
//! `raw_output_contents` (gRPC). A BOOL element is one byte; a BYTES element is a 4-byte
//! little-endian length and then its bytes.

use crate::{DType, TensorData};

/// Decodes `elements` elements of `dtype` from `bytes`, which must hold exactly them.
pub fn decode_raw(dtype: DType, elements: usize, bytes: &[u8]) -> Result<TensorData, String> {
    fn fixed<const N: usize, T>(
        elements: usize,
        bytes: &[u8],
        dtype: DType,
        read: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        let expected = elements.checked_mul(N).ok_or("too many elements")?;
        if bytes.len() != expected {
            return Err(format!(
                "{elements} {dtype} elements take {expected} bytes, but {} were given",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|chunk| read(chunk.try_into().expect("chunks of N")))
            .collect())
    }
    Ok(match dtype {
        DType::F32 => {
            let values = fixed(elements, bytes, dtype, f32::from_le_bytes)?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!("element {i} is not a finite number"));
            }
            TensorData::F32(values)
        }
        DType::F64 => TensorData::F64(fixed(elements, bytes, dtype, f64::from_le_bytes)?),
        DType::I32 => TensorData::I32(fixed(elements, bytes, dtype, i32::from_le_bytes)?),
        DType::I64 => TensorData::I64(fixed(elements, bytes, dtype, i64::from_le_bytes)?),
        DType::U8 => TensorData::U8(fixed(elements, bytes, dtype, |[b]: [u8; 1]| b)?),
        DType::Bool => TensorData::Bool(fixed(elements, bytes, dtype, |[b]: [u8; 1]| b != 0)?),
        DType::String => {
            let mut rest = bytes;
            // Each element has at least its 4-byte length: never reserve more than the bytes allow.
            let mut strings = Vec::with_capacity(elements.min(bytes.len() / 4));
            for i in 0..elements {
                let Some((length, tail)) = rest.split_first_chunk::<4>() else {
                    return Err(format!(
                        "BYTES element {i} of {elements} is missing (the data ends)"
                    ));
                };
                let length = u32::from_le_bytes(*length) as usize;
                if tail.len() < length {
                    return Err(format!(
                        "BYTES element {i} says {length} bytes, but only {} are left",
                        tail.len()
                    ));
                }
                let (element, tail) = tail.split_at(length);
                let text = std::str::from_utf8(element)
                    .map_err(|e| format!("BYTES element {i} is not UTF-8 text: {e}"))?;
                strings.push(text.to_string());
                rest = tail;
            }
            if !rest.is_empty() {
                return Err(format!(
                    "{} bytes are left after the {elements} BYTES elements",
                    rest.len()
                ));
            }
            TensorData::String(strings)
        }
    })
}

/// Appends `data`'s elements to `out` as raw bytes.
pub fn encode_raw(data: &TensorData, out: &mut Vec<u8>) {
    out.reserve(raw_size(data));
    match data {
        TensorData::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::F64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::I32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::I64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::String(v) => v.iter().for_each(|s| {
            out.extend((s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }),
    }
}

/// How many bytes [`encode_raw`] writes for `data`.
pub fn raw_size(data: &TensorData) -> usize {
    match data {
        TensorData::String(v) => v.iter().map(|s| 4 + s.len()).sum(),
        other => other.byte_size(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let cases = [
            TensorData::F32(vec![1.5, -2.0]),
            TensorData::F64(vec![0.25]),
            TensorData::I32(vec![-7, 9]),
            TensorData::I64(vec![1 << 40]),
            TensorData::U8(vec![0, 255]),
            TensorData::Bool(vec![true, false, true]),
            TensorData::String(vec!["héllo".into(), String::new()]),
        ];
        for data in cases {
            let mut bytes = Vec::new();
            encode_raw(&data, &mut bytes);
            assert_eq!(bytes.len(), raw_size(&data));
            assert_eq!(decode_raw(data.dtype(), data.len(), &bytes).unwrap(), data);
        }
    }

    #[test]
    fn sizes_that_do_not_match_are_refused() {
        let err = decode_raw(DType::F32, 3, &[0; 8]).unwrap_err();
        assert_eq!(err, "3 FP32 elements take 12 bytes, but 8 were given");
        // A BYTES length past the end, and a huge element count with little data.
        assert!(decode_raw(DType::String, 1, &[9, 0, 0, 0, b'a']).is_err());
        assert!(decode_raw(DType::String, usize::MAX, &[0; 4]).is_err());
        assert!(decode_raw(DType::F32, 1, &f32::NAN.to_le_bytes()).is_err());
    }
}
