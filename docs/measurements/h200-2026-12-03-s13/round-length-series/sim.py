# Block-bootstrap gates from the H200's recorded 250 ms rounds (issue 14): PYTHONPATH=<repo> python3 sim.py
import json,glob,os,numpy as np,sys
HERE=os.path.dirname(os.path.abspath(__file__))
from pytest_mlperf.host.gate.stopping import GatePlan, evaluate
def series(kind):
    out=[]
    for f in sorted(glob.glob(f'{HERE}/gate250-resnet50-{kind}-*-results.json'))+glob.glob(f'{HERE}/series-resnet50-{kind}-250ms-100-results.json'):
        m=json.load(open(f))['cases'][0]['gate']['metrics'][0]
        out.append((np.array(m['reference']),np.array(m['candidate'])))
    return out
def synth(pool, n, rng, block=6):
    r=[];c=[]
    while len(r)<n:
        ref,cand=pool[rng.integers(len(pool))]
        s=rng.integers(0,len(ref)-block+1)
        r.extend(ref[s:s+block]); c.extend(cand[s:s+block])
    return np.array(r[:n]),np.array(c[:n])
def run(plan, pool, truth, sims=150, seed=1):
    rng=np.random.default_rng(seed); res=[]
    for _ in range(sims):
        r,c=synth(pool, plan.max_rounds, rng)
        for n in range(1,plan.max_rounds+1):
            d=evaluate(plan,r[:n],c[:n],higher_is_better=False,elapsed_s=0)
            if d: break
        res.append((d.verdict.value,d.interval.estimate,n))
    v=[x[0] for x in res]; e=np.array([x[1] for x in res]); n=np.array([x[2] for x in res])
    err=np.abs(e*100-truth)
    print(f'  min{plan.min_rounds} max{plan.max_rounds}: PASS {v.count("PASS")} FAIL {v.count("FAIL")} INC {v.count("INCONCLUSIVE")} | |err|>1.5: {np.mean(err>1.5):.0%} p90 err {np.quantile(err,.9):.2f} | rounds mean {n.mean():.0f} max {n.max()}')
if __name__=="__main__":
  aa=series('aa'); c7=series('c7')
  print('rounds aa',sum(len(x[0]) for x in aa),'c7',sum(len(x[0]) for x in c7))
  for mn,mx in [(12,60),(24,60),(24,72),(36,72)]:
      plan=GatePlan(min_rounds=mn,max_rounds=mx,estimator='floor-latency',confidence=0.95)
      print("A/A"); run(plan,aa,0.0)
      print("c7"); run(plan,c7,7.6)
