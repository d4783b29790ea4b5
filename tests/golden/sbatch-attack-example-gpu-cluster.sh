#!/bin/bash

# Parameters
#SBATCH --account=my-lab
#SBATCH --array=0-7%8
#SBATCH --constraint='a100|h100'
#SBATCH --cpus-per-task=4
#SBATCH --error=/scratch/run/jobs/attack/%A_%a/%A_%a_0_log.err
#SBATCH --gpus-per-node=1
#SBATCH --job-name=pipeline-attack-73853cc0
#SBATCH --mail-type=FAIL
#SBATCH --mem=16384MB
#SBATCH --nodes=1
#SBATCH --open-mode=append
#SBATCH --output=/scratch/run/jobs/attack/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=240

# setup
module load apptainer
export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /scratch/run/jobs/attack/%A_%a/%A_%a_%t_log.out --error /scratch/run/jobs/attack/%A_%a/%A_%a_%t_log.err apptainer exec --nv --bind /scratch <repo>/slurm/profiles/pipeline.sif python -P -u -m pipeline.infra.executor.guard -u -m submitit.core._submit /scratch/run/jobs/attack/%j
