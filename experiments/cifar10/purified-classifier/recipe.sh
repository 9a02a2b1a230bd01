# The fine-tuning recipe shared by run.sh (train, train-fresh) and device_run.sh: fastnet's weights, then 3 epochs
# of one-cycle SGD (lr 0.1) with fastnet's augmentation and label smoothing, saved in float16. Later options on the
# command line override these (argparse: the last one wins).
FT_OPTS=(--init zoo/cifar10-fastnet.safetensors --epochs 3 --batch-size 512 --lr 0.1 --weight-decay 5e-4
         --label-smoothing 0.2 --schedule onecycle --warmup 0.2 --pad 2 --weights-dtype float16)
