"""The request contract, one home for it: what a sketch and its hints are, how they become a
generator's input, and what travels between the gateway and Triton.

- `contract.hints`: hint kinds, the per-image reference encoding, the hint samplers (numpy, cv2).
- `contract.wire`: the compact uint8 tensors a Triton generator takes and returns, the weights
  file name, the default variant, the hint-kind-to-API map (numpy only).
- `contract.batch`: the same encoding for a whole batch in torch. Training and the Triton model
  import it; the gateway never does (it needs no torch).
"""
