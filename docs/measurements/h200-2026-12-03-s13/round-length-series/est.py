# Estimators compared on block-bootstrap gates of the recorded rounds: PYTHONPATH=<repo> python3 est.py
import os, numpy as np, sys
sys.path.insert(0,os.path.dirname(os.path.abspath(__file__)))
from sim import series, synth
import sim
def fl(x,share): k=int(np.ceil(share*len(x))); return np.mean(np.sort(x)[:k])
E={
 'floor25': lambda r,c: fl(c,.25)/fl(r,.25)-1,
 'floor50': lambda r,c: fl(c,.5)/fl(r,.5)-1,
 'floor40': lambda r,c: fl(c,.4)/fl(r,.4)-1,
 'median': lambda r,c: np.median(c)/np.median(r)-1,
 'q25': lambda r,c: np.quantile(c,.25)/np.quantile(r,.25)-1,
 'min': lambda r,c: c.min()/r.min()-1,
 'mean': lambda r,c: c.mean()/r.mean()-1,
}
aa=series('aa'); c7=series('c7')
for n in (12,24,36,48):
    for name,pool,truth in (('A/A',aa,0),('c7',c7,7.6)):
        rng=np.random.default_rng(3); errs={k:[] for k in E}
        for _ in range(400):
            r,c=synth(pool,n,rng)
            for k,f in E.items(): errs[k].append(100*f(r,c)-truth)
        print(n,name,' '.join(f'{k}:rms{np.sqrt(np.mean(np.square(v))):.2f}/bias{np.mean(v):+.2f}/>1.5:{np.mean(np.abs(v)>1.5):.0%}' for k,v in errs.items()))
