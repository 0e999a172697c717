# Replays the gate's stopping rule on block-bootstrap draws of the H200's recorded 100 ms rounds (issue 14):
#   PYTHONPATH=<repo> python3 replay.py resnet|probes
import json,os,sys,numpy as np

from pytest_mlperf.host.gate.stopping import GatePlan, evaluate
D=os.path.dirname(os.path.abspath(__file__))+'/'
def load(f):
    m=json.load(open(D+f))['cases'][0]['gate']['metrics'][0]; return np.array(m['reference']),np.array(m['candidate'])
def synth(ref,cand,n,rng,block,scale=1.0):
    r=[];c=[]
    while len(r)<n:
        s=rng.integers(0,len(ref)-block+1); r.extend(ref[s:s+block]); c.extend(cand[s:s+block]*scale)
    return np.array(r[:n]),np.array(c[:n])
def run(plan,ref,cand,truth,scale,block,sims=200,seed=1,sec=0.265):
    rng=np.random.default_rng(seed); res=[]
    for _ in range(sims):
        r,c=synth(ref,cand,plan.max_rounds,rng,block,scale)
        for n in plan_looks(plan):
            d=evaluate(plan,r[:n],c[:n],higher_is_better=False,elapsed_s=0)
            if d: break
        res.append((d.verdict.value,d.interval.estimate,n))
    v=[x[0] for x in res]; e=np.array([x[1] for x in res]); n=np.array([x[2] for x in res])
    err=np.abs(e*100-truth)
    print(f'  {plan.min_rounds}-{plan.max_rounds} blk{block}: PASS {v.count("PASS")} FAIL {v.count("FAIL")} INC {v.count("INCONCLUSIVE")} | >1.5: {np.mean(err>1.5):.0%} p90err {np.quantile(err,.9):.2f} | rounds mean {n.mean():.0f} (gate ~{n.mean()*sec:.0f}s, max {n.max()*sec:.0f}s)')
from pytest_mlperf.host.gate.stopping import looks as plan_looks
if __name__=='__main__':
    which=sys.argv[1]
    if which=='resnet':
        ref,cand=load('series-resnet50-aa-100ms-200-results.json')
        for mn,mx in [(36,72),(48,144),(60,160),(72,144),(40,160)]:
            plan=GatePlan(min_rounds=mn,max_rounds=mx,estimator='floor-latency',confidence=0.95)
            for blk in (15,30):
                print('A/A'); run(plan,ref,cand,0.0,1.0,blk)
                print('7.6'); run(plan,ref,cand,7.6,1.076,blk)
    else:
        ref,cand=load('series-gpu_probes-aa-100ms-200-unpinned-results.json')
        r7,c7=load('series-gpu_probes-c7-100ms-200-pinned-results.json')
        for mn,mx in [(36,72),(48,144),(60,160),(72,144)]:
            plan=GatePlan(min_rounds=mn,max_rounds=mx,estimator='floor-latency',confidence=0.95)
            for blk in (15,30):
                print('A/A'); run(plan,ref,cand,0.0,1.0,blk)
                print('c7 (truth 12.4)'); run(plan,r7,c7,12.4,1.0,blk)
