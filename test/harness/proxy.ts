export * from '../../src/throwaway/proxy.js';
