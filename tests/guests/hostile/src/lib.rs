//! Misbehaves on request, so tests can check the host contains it. The request body says how:
//! `loop` spins forever, `trap` panics, `oom` allocates until refused, anything else gives the churn
//! model a valid `features` tensor.

use aifn_sdk::{Error, Function, Request, Response, Tensor};

struct Hostile;

impl Function for Hostile {
    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
        match req.body.as_slice() {
            b"loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            b"trap" => panic!("the hostile module panicked on purpose"),
            b"oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            _ => Ok(vec![Tensor::f32("features", vec![1, 6], vec![42.5, 12.0, 1.0, 0.0, 0.0, 1.0])]),
        }
    }

    fn postprocess(_req: Request, _outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
        Ok(None)
    }
}

aifn_sdk::export!(Hostile);
