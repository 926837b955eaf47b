export * from '../../src/throwaway/cluster.js';
