import time, torch, json
torch.set_num_threads(1)
from advpure.train.diffusion import train_diffusion, denoising_error
from advpure.diffusion import load_denoiser
from advpure.data import load_dataset
x, _ = load_dataset("digits", "test").tensors(); x = 2 * x - 1
res = {}
for tmax in (1.0, 0.2):
    t0 = time.process_time()
    r = train_diffusion(dataset="digits", steps=600, batch_size=64, lr=1e-3, t_max=tmax, out="runs/tmax",
                        name=f"tmax{tmax}", grid=False, progress=False, save_every=0, seed=0)
    m, _ = load_denoiser(r["weights"])
    errs = {t: denoising_error(m, x, t, generator=torch.Generator().manual_seed(0), repeats=8) for t in (0.02, 0.05, 0.1, 0.2, 0.5)}
    res[tmax] = {"cpu_s": time.process_time() - t0, "final_loss": r["final_loss"], "err": errs}
    print(tmax, json.dumps(res[tmax]), flush=True)
